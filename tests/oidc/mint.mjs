// Mints a compact JWT for tests, honest or hostile, from a JSON request on stdin:
//
//   {
//     "jwks_file": "<state dir>/jwks.json",       the provider's private JWKS
//     "alg": "RS256" | "ES256" | "none" | "HS256-with-public-key",
//     "key": "provider" | "other",                 other: a fresh key the JWKS does not hold
//     "kid": "...",                                optional; replaces the key's own kid
//     "claims": { ... },                           the payload, exactly as given
//     "header": { ... }                            extra header fields; null removes a field
//   }
//
// `none` yields an unsigned token with an empty signature part. `HS256-with-public-key` signs
// with HMAC-SHA256 keyed by the provider's RSA public key in PEM form, the key-confusion attack
// on verifiers that let the token pick the algorithm.
//
// The token is printed to stdout followed by a newline.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';

const KEY_TYPES = { RS256: 'RSA', ES256: 'EC' };

try {
  const request = JSON.parse(fs.readFileSync(0, 'utf8'));
  process.stdout.write(`${await mint(request)}\n`);
} catch (error) {
  console.error(`mint.mjs: ${error.message}`);
  process.exit(1);
}

async function mint(request) {
  const { alg, key: keyChoice = 'provider', claims = {}, header: extraHeader = {} } = request;
  if (!['RS256', 'ES256', 'none', 'HS256-with-public-key'].includes(alg)) {
    throw new Error(`unsupported alg ${JSON.stringify(alg)}`);
  }
  if (!['provider', 'other'].includes(keyChoice)) {
    throw new Error(`unsupported key ${JSON.stringify(keyChoice)}`);
  }

  // `none` needs no key; the key-confusion attack always uses the provider's RSA key.
  let jwk;
  if (alg === 'HS256-with-public-key') {
    jwk = providerKey(request.jwks_file, 'RS256');
  } else if (alg !== 'none') {
    jwk = keyChoice === 'provider' ? providerKey(request.jwks_file, alg) : await freshKey(alg);
  }

  const kid = request.kid ?? (alg === 'none' ? undefined : jwk.kid);
  const header = {
    alg: alg === 'HS256-with-public-key' ? 'HS256' : alg,
    typ: 'JWT',
    ...(kid === undefined ? {} : { kid }),
    ...extraHeader,
  };
  for (const [name, value] of Object.entries(header)) {
    if (value === null) {
      delete header[name];
    }
  }

  const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  return `${signingInput}.${sign(alg, jwk, signingInput)}`;
}

function sign(alg, jwk, signingInput) {
  switch (alg) {
    case 'none':
      return '';
    case 'RS256':
      return crypto.sign('sha256', Buffer.from(signingInput), privateKey(jwk))
        .toString('base64url');
    case 'ES256':
      // JWS wants the raw r || s form (RFC 7518 section 3.4), not DER.
      return crypto.sign('sha256', Buffer.from(signingInput), {
        key: privateKey(jwk),
        dsaEncoding: 'ieee-p1363',
      }).toString('base64url');
    default: {
      const { kty, n, e } = jwk;
      const publicPem = crypto.createPublicKey({ key: { kty, n, e }, format: 'jwk' })
        .export({ type: 'spki', format: 'pem' });
      return crypto.createHmac('sha256', publicPem).update(signingInput).digest('base64url');
    }
  }
}

function providerKey(jwksFile, alg) {
  if (!jwksFile) {
    throw new Error('jwks_file is required');
  }

  const { keys } = JSON.parse(fs.readFileSync(jwksFile, 'utf8'));
  const jwk = keys.find((candidate) => candidate.alg === alg && candidate.kty === KEY_TYPES[alg]);
  if (!jwk) {
    throw new Error(`${jwksFile} holds no ${alg} key`);
  }

  return jwk;
}

async function freshKey(alg) {
  const { privateKey: key } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(key);

  return { ...jwk, kid: await calculateJwkThumbprint(jwk), alg };
}

function privateKey(jwk) {
  return crypto.createPrivateKey({ key: jwk, format: 'jwk' });
}

function base64url(text) {
  return Buffer.from(text).toString('base64url');
}
