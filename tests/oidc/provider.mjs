// A real OpenID Connect provider (the `oidc-provider` package) for jit-ca's integration tests
// and demo.
//
// Usage:
//   node provider.mjs --port 0 --users users.json --state-dir ./state
//
// For the local demo (the issuer config/jit-ca.toml expects), from the repository root:
//   npm ci --prefix tests/oidc && npm run demo --prefix tests/oidc
// then sign in as alice / alice-pw (see demo-users.json) when the browser shows the login form.
//
// Each option may instead come from the environment: JIT_OIDC_PORT, JIT_OIDC_USERS,
// JIT_OIDC_STATE_DIR. JIT_OIDC_ID_TOKEN_TTL sets the ID token lifetime in seconds (default
// 3600).
//
// It listens on 127.0.0.1 only. When it is ready it prints exactly one line to stdout,
// `{"ready":true,"issuer":"http://127.0.0.1:PORT"}`; everything else goes to stderr.
//
// The private signing keys (RS256 and ES256) are written to `<state dir>/jwks.json` so that
// tests can mint tokens signed by the provider's own key. `POST /__test/rotate-keys` replaces
// them with fresh keys.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info; stdout is reserved for the ready line.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// The two authentication context classes the login form can produce.
const ACR_PASSWORD = 'urn:jit-ca:test:acr:pwd';
const ACR_MFA = 'urn:jit-ca:test:acr:mfa';

const options = readOptions();
const users = readUsers(options.usersFile);
fs.mkdirSync(options.stateDir, { recursive: true });

// Cookie signing keys outlive key rotation, so browser sessions survive a Provider rebuild.
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

const server = http.createServer((req, res) => {
  route(req, res).catch((error) => {
    console.error('request failed', req.method, req.url, error);
    if (!res.headersSent) {
      sendHtml(res, 500, page('Error', `<p>${escapeHtml(error.message)}</p>`));
    } else {
      res.end();
    }
  });
});

let issuer;
let provider;
let providerCallback;

server.listen(options.port, '127.0.0.1', async () => {
  try {
    issuer = `http://127.0.0.1:${server.address().port}`;
    await installProvider();
    process.stdout.write(`${JSON.stringify({ ready: true, issuer })}\n`);
    console.error(`oidc provider listening, issuer ${issuer}`);
  } catch (error) {
    console.error('could not start the provider', error);
    process.exit(1);
  }
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}

function readOptions() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      users: { type: 'string' },
      'state-dir': { type: 'string' },
    },
  });

  const port = Number(values.port ?? process.env.JIT_OIDC_PORT ?? '0');
  const usersFile = values.users ?? process.env.JIT_OIDC_USERS;
  const stateDir = values['state-dir'] ?? process.env.JIT_OIDC_STATE_DIR;
  const idTokenTtl = Number(process.env.JIT_OIDC_ID_TOKEN_TTL ?? '3600');

  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    fail(`invalid port ${values.port ?? process.env.JIT_OIDC_PORT}`);
  }
  if (!usersFile) {
    fail('a users file is required (--users or JIT_OIDC_USERS)');
  }
  if (!stateDir) {
    fail('a state directory is required (--state-dir or JIT_OIDC_STATE_DIR)');
  }
  if (!Number.isInteger(idTokenTtl) || idTokenTtl <= 0) {
    fail(`invalid JIT_OIDC_ID_TOKEN_TTL ${process.env.JIT_OIDC_ID_TOKEN_TTL}`);
  }

  return { port, usersFile, stateDir, idTokenTtl };
}

// Loads the users file once, refusing entries that would make claims ambiguous.
function readUsers(file) {
  const list = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!Array.isArray(list)) {
    fail(`${file}: expected a JSON array of users`);
  }

  const bySub = new Map();
  for (const user of list) {
    const valid = typeof user?.sub === 'string' && user.sub !== ''
      && typeof user.password === 'string'
      && typeof user.email === 'string'
      && typeof user.email_verified === 'boolean'
      && Array.isArray(user.groups) && user.groups.every((group) => typeof group === 'string');
    if (!valid) {
      fail(`${file}: each user needs sub, email, email_verified, groups and password`);
    }
    if (bySub.has(user.sub)) {
      fail(`${file}: duplicate user ${user.sub}`);
    }
    bySub.set(user.sub, user);
  }

  return bySub;
}

function fail(message) {
  console.error(`provider.mjs: ${message}`);
  process.exit(2);
}

// Builds (or rebuilds, after key rotation) the Provider with freshly generated signing keys.
// Stored sessions, grants and tokens live in the memory adapter's process-wide storage, so
// they survive a rebuild.
async function installProvider() {
  const privateJwks = { keys: [await newSigningKey('RS256'), await newSigningKey('ES256')] };
  writeJwksFile(privateJwks);

  provider = new Provider(issuer, configuration(privateJwks));
  provider.on('server_error', (_ctx, error) => console.error('server_error', error));
  providerCallback = provider.callback();

  return privateJwks.keys.map((key) => key.kid);
}

async function newSigningKey(alg) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(jwk);

  return { ...jwk, kid, alg, use: 'sig' };
}

// Writes through a temporary file so a reader never sees a half-written key set.
function writeJwksFile(privateJwks) {
  const target = path.join(options.stateDir, 'jwks.json');
  const temporary = `${target}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, `${JSON.stringify(privateJwks, null, 2)}\n`, { mode: 0o600 });
  fs.chmodSync(temporary, 0o600);
  fs.renameSync(temporary, target);
}

function nativeClient(clientId, clientName) {
  return {
    client_id: clientId,
    client_name: clientName,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT],
    response_types: ['code'],
    // Native clients may use any port on a loopback redirect URI (RFC 8252 section 7.3).
    redirect_uris: ['http://127.0.0.1/callback'],
    id_token_signed_response_alg: 'RS256',
    // auth_time always lands in the ID token, not only when max_age is asked for.
    require_auth_time: true,
  };
}

function configuration(privateJwks) {
  return {
    clients: [nativeClient('jit', 'jit CLI'), nativeClient('other-app', 'Another application')],
    jwks: privateJwks,
    cookies: { keys: cookieKeys },
    acrValues: [ACR_PASSWORD, ACR_MFA],
    responseTypes: ['code'],
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    claims: {
      auth_time: null,
      iss: null,
      sid: null,
      openid: ['sub', 'acr', 'amr'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // Put the scope's claims in the ID token itself, not only behind the userinfo endpoint.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    // A refresh token whenever a client allowed the refresh_token grant asks for
    // offline_access.
    issueRefreshToken: async (_ctx, client, code) => client.grantTypeAllowed('refresh_token')
      && code.scopes.has('offline_access'),
    ttl: { IdToken: options.idTokenTtl },
    findAccount,
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError: (ctx, out) => {
      const rows = Object.entries(out)
        .map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: ${escapeHtml(value)}</p>`);
      ctx.type = 'html';
      ctx.body = page('Error', `<div id="op-error">${rows.join('')}</div>`);
    },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true,
        userCodeInputSource: (ctx, form, _out, err) => {
          const message = err ? '<p class="error">That code did not work; try again.</p>' : '';
          ctx.body = page('Enter code', `${message}${form}
            <button type="submit" form="op.deviceInputForm">Continue</button>`);
        },
        userCodeConfirmSource: (ctx, form, client, _deviceInfo, userCode) => {
          const name = escapeHtml(client.clientName || client.clientId);
          ctx.body = page('Confirm device', `<p>${name} is asking to sign in.
            Check that your device shows <code>${escapeHtml(userCode)}</code>.</p>${form}
            <button type="submit" form="op.deviceConfirmForm">Continue</button>
            <button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">
            Abort</button>`);
        },
        successSource: (ctx) => {
          ctx.body = page('Signed in', '<p id="device-login-success">'
            + 'The device is signed in; you can close this page.</p>');
        },
      },
    },
  };
}

async function findAccount(_ctx, sub) {
  const user = users.get(sub);
  if (!user) {
    return undefined;
  }

  return {
    accountId: sub,
    claims: async () => ({
      sub,
      email: user.email,
      email_verified: user.email_verified,
      groups: user.groups,
      name: user.name ?? sub,
      preferred_username: sub,
    }),
  };
}

async function route(req, res) {
  if (!provider) {
    return sendJson(res, 503, { error: 'starting' });
  }

  const url = new URL(req.url, issuer);

  if (url.pathname === '/__test/rotate-keys') {
    if (req.method !== 'POST') {
      return sendJson(res, 405, { error: 'method_not_allowed' });
    }
    const kids = await installProvider();
    console.error(`signing keys rotated, now ${kids.join(', ')}`);
    return sendJson(res, 200, { kids });
  }

  const interaction = url.pathname.match(/^\/interaction\/([\w-]+)(\/login)?$/);
  if (interaction) {
    const [, uid, login] = interaction;
    if (login && req.method === 'POST') {
      return submitLogin(req, res, uid);
    }
    if (!login && req.method === 'GET') {
      return showInteraction(req, res, uid);
    }
    return sendHtml(res, 405, page('Error', '<p>Method not allowed.</p>'));
  }

  return providerCallback(req, res);
}

// The login prompt shows the form; the consent prompt is granted at once for everything the
// client asked, so the login form is the only step a person takes.
async function showInteraction(req, res, uid) {
  const details = await interactionOrErrorPage(req, res, uid);
  if (!details) {
    return undefined;
  }

  switch (details.prompt.name) {
    case 'login':
      return sendHtml(res, 200, loginPage(uid, details.params.client_id, undefined));
    case 'consent':
      return grantConsent(req, res, details);
    default:
      return sendHtml(res, 400, page('Error', `<p>Unsupported prompt
        ${escapeHtml(details.prompt.name)}.</p>`));
  }
}

async function grantConsent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });

  if (prompt.details.missingOIDCScope) {
    grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  }
  if (prompt.details.missingOIDCClaims) {
    grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  }
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }

  const savedGrantId = await grant.save();
  const consent = grantId ? {} : { grantId: savedGrantId };
  return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

async function submitLogin(req, res, uid) {
  const details = await interactionOrErrorPage(req, res, uid);
  if (!details) {
    return undefined;
  }
  if (details.prompt.name !== 'login') {
    return sendHtml(res, 400, page('Error', '<p>This interaction is not asking for a login.</p>'));
  }

  const form = new URLSearchParams(await readBody(req));
  const user = users.get(form.get('login') ?? '');
  if (!user || !sameSecret(user.password, form.get('password') ?? '')) {
    console.error(`login refused for ${JSON.stringify(form.get('login'))}`);
    const retry = loginPage(uid, details.params.client_id, 'Invalid login or password.');
    return sendHtml(res, 401, retry);
  }

  // The mfa box stands for a one-time code having been checked as well.
  const mfa = form.get('mfa') === '1';
  const login = {
    accountId: user.sub,
    amr: mfa ? ['pwd', 'otp'] : ['pwd'],
    acr: mfa ? ACR_MFA : ACR_PASSWORD,
    remember: true,
  };
  console.error(`login accepted for ${user.sub}, amr ${login.amr.join('+')}`);
  return provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
}

// Returns the interaction's details, or answers with an error page and returns undefined when
// it is unknown, expired or belongs to another uid.
async function interactionOrErrorPage(req, res, uid) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (error) {
    sendHtml(res, 400, page('Error', `<p id="op-error">${escapeHtml(error.message)}</p>`));
    return undefined;
  }

  if (details.uid !== uid) {
    sendHtml(res, 400, page('Error', '<p id="op-error">Interaction mismatch.</p>'));
    return undefined;
  }

  return details;
}

function loginPage(uid, clientId, error) {
  const message = error ? `<p class="error" id="login-error">${escapeHtml(error)}</p>` : '';
  return page('Sign in', `${message}<p>Sign in to continue to ${escapeHtml(clientId)}.</p>
    <form id="login-form" method="post" action="/interaction/${escapeHtml(uid)}/login">
      <label>Login <input type="text" name="login" autocomplete="username" autofocus></label>
      <label>Password <input type="password" name="password" autocomplete="current-password">
      </label>
      <label><input type="checkbox" name="mfa" value="1"> I also entered a one-time code</label>
      <button type="submit">Sign in</button>
    </form>`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>${escapeHtml(title)}</title>
  <style>
    body { font-family: sans-serif; max-width: 28em; margin: 2em auto; }
    label { display: block; margin: 0.5em 0; }
    .error { color: #b00020; }
  </style>
</head>
<body>
  <h1>${escapeHtml(title)}</h1>
  ${body}
</body>
</html>
`;
}

function escapeHtml(value) {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

// Compares digests so the comparison takes the same time whatever the guess.
function sameSecret(expected, given) {
  const digest = (value) => crypto.createHash('sha256').update(value).digest();
  return crypto.timingSafeEqual(digest(expected), digest(given));
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) {
      throw new Error('request body too large');
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sendHtml(res, status, html) {
  send(res, status, 'text/html; charset=utf-8', html);
}

function sendJson(res, status, value) {
  send(res, status, 'application/json', JSON.stringify(value));
}

function send(res, status, contentType, body) {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' });
  res.end(body);
}
