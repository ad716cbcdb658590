//! A real OpenID Connect provider for the integration tests.
//!
//! [`OidcProvider::start`] runs `tests/oidc/provider.mjs` (the `oidc-provider` package) on a
//! free loopback port with a given cast of [`TestUser`]s, and plays the human's part of a login
//! over plain HTTP, the way a browser would: it reads each page's form, keeps its hidden fields
//! and cookies, and submits it. It can also mint tokens signed by the provider's own keys (or
//! forged ones) through `tests/oidc/mint.mjs`.
//!
//! Everything here blocks: call it from a plain `#[test]`, or from `spawn_blocking` inside an
//! async test. Any failure panics with what was expected, what came back and the tail of the
//! provider's log.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The client id of the `jit` CLI: a public native client.
pub const JIT_CLIENT_ID: &str = "jit";

/// A second client of the same shape, for tokens meant for another audience.
pub const OTHER_CLIENT_ID: &str = "other-app";

/// The scope [`OidcProvider::device_flow_id_token`] asks for.
pub const DEVICE_FLOW_SCOPE: &str = "openid email groups offline_access";

/// The `acr` of a login with a password only.
pub const ACR_PASSWORD: &str = "urn:jit-ca:test:acr:pwd";

/// The `acr` of a login with a password and a one-time code.
pub const ACR_MFA: &str = "urn:jit-ca:test:acr:mfa";

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const POLL_LIMIT: u32 = 40;
const DEFAULT_ID_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A person the provider knows, as written to its users file.
#[derive(Clone, Debug, Serialize)]
pub struct TestUser {
    /// The subject, also the login name on the login form.
    pub sub: String,
    /// The `email` claim.
    pub email: String,
    /// The `email_verified` claim.
    pub email_verified: bool,
    /// The `groups` claim.
    pub groups: Vec<String>,
    /// The password the login form accepts.
    pub password: String,
}

impl TestUser {
    /// A user with a verified `<sub>@example.com` address and the password `<sub>-pw`.
    pub fn new(sub: &str, groups: &[&str]) -> Self {
        TestUser {
            sub: sub.to_owned(),
            email: format!("{sub}@example.com"),
            email_verified: true,
            groups: groups.iter().map(|group| (*group).to_owned()).collect(),
            password: format!("{sub}-pw"),
        }
    }

    /// An engineer.
    pub fn alice() -> Self {
        Self::new("alice", &["engineers"])
    }

    /// A database administrator who may also approve requests.
    pub fn bob() -> Self {
        Self::new("bob", &["dba", "approvers"])
    }

    /// An approver.
    pub fn carol() -> Self {
        Self::new("carol", &["approvers"])
    }

    /// A user in no group at all.
    pub fn mallory() -> Self {
        Self::new("mallory", &[])
    }

    /// An incident responder.
    pub fn erin() -> Self {
        Self::new("erin", &["responders"])
    }

    /// The standard cast: alice, bob, carol, mallory and erin.
    pub fn cast() -> Vec<Self> {
        vec![
            Self::alice(),
            Self::bob(),
            Self::carol(),
            Self::mallory(),
            Self::erin(),
        ]
    }
}

/// The tokens a token endpoint answered with.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The ID token (a compact JWT).
    pub id_token: String,
    /// The opaque access token.
    pub access_token: String,
    /// Present when `offline_access` was granted.
    pub refresh_token: Option<String>,
    /// The access token's lifetime in seconds.
    pub expires_in: u64,
}

/// What a device authorization endpoint answers (RFC 8628 section 3.2).
#[derive(Clone, Debug, Deserialize)]
pub struct DeviceAuthorization {
    /// The code the client polls the token endpoint with.
    pub device_code: String,
    /// The code the person types in.
    pub user_code: String,
    /// The page where the person types the code.
    pub verification_uri: String,
    /// The same page with the code filled in.
    pub verification_uri_complete: String,
    /// How long the codes live, in seconds.
    pub expires_in: u64,
}

/// A running `tests/oidc/provider.mjs`, killed when dropped.
pub struct OidcProvider {
    child: Child,
    issuer: String,
    discovery: Value,
    api: Client,
    // Holds the users file, the provider's state directory and its log.
    workdir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts a provider that knows `users`, with one-hour ID tokens.
    ///
    /// Panics when Node or `tests/oidc/node_modules` is missing, or when the provider does not
    /// report ready within 20 seconds.
    pub fn start(users: &[TestUser]) -> Self {
        Self::start_with_id_token_ttl(users, DEFAULT_ID_TOKEN_TTL)
    }

    /// Starts a provider whose ID tokens live for `id_token_ttl` (whole seconds, at least one).
    pub fn start_with_id_token_ttl(users: &[TestUser], id_token_ttl: Duration) -> Self {
        let oidc_dir = oidc_dir();
        if !oidc_dir.join("node_modules").is_dir() {
            panic!("tests/oidc/node_modules is missing: run `npm ci --prefix tests/oidc` first");
        }

        let workdir = tempfile::tempdir().expect("create a temporary directory for the provider");
        let users_path = workdir.path().join("users.json");
        let users_json = serde_json::to_vec_pretty(users).expect("serialise the users");
        fs::write(&users_path, users_json).expect("write the users file");
        let log = File::create(workdir.path().join("provider.log")).expect("create provider.log");

        let mut child = Command::new("node")
            .arg(oidc_dir.join("provider.mjs"))
            .arg("--port=0")
            .arg(format!("--users={}", users_path.display()))
            .arg(format!(
                "--state-dir={}",
                workdir.path().join("state").display()
            ))
            .env(
                "JIT_OIDC_ID_TOKEN_TTL",
                id_token_ttl.as_secs().max(1).to_string(),
            )
            .current_dir(&oidc_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run `node` for the OIDC provider: {error}"));

        // The first stdout line is the ready report; the rest is drained so the child never
        // blocks on a full pipe.
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = ready_tx.send(lines.next());
            lines.for_each(drop);
        });

        let ready_line = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the OIDC provider did not report ready ({outcome:?}); its log:\n{}",
                    log_tail(workdir.path())
                );
            }
        };
        let ready: Value = serde_json::from_str(&ready_line)
            .unwrap_or_else(|error| panic!("bad ready line {ready_line:?}: {error}"));
        let issuer = match (&ready["ready"], ready["issuer"].as_str()) {
            (Value::Bool(true), Some(issuer)) => issuer.to_owned(),
            _ => panic!("unexpected ready line {ready_line:?}"),
        };

        let api = Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(Policy::none())
            .no_proxy()
            .build()
            .expect("build an HTTP client");
        let mut provider = OidcProvider {
            child,
            issuer,
            discovery: Value::Null,
            api,
            workdir,
        };
        let discovery_url = format!("{}/.well-known/openid-configuration", provider.issuer);
        provider.discovery = provider.json(provider.api.get(&discovery_url).send(), 200);
        provider
    }

    /// The issuer, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `jit` client's id.
    pub fn client_id(&self) -> &str {
        JIT_CLIENT_ID
    }

    /// The provider's private JWKS file (RS256 and ES256 keys), rewritten by
    /// [`Self::rotate_keys`].
    pub fn jwks_path(&self) -> PathBuf {
        self.workdir.path().join("state").join("jwks.json")
    }

    /// The discovery document, as fetched at start.
    pub fn discovery(&self) -> &Value {
        &self.discovery
    }

    /// The public JWKS served at the `jwks_uri`, fetched now.
    pub fn jwks(&self) -> Value {
        let jwks_uri = self.endpoint("jwks_uri");
        self.json(self.api.get(jwks_uri).send(), 200)
    }

    /// The last lines of the provider's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(self.workdir.path())
    }

    /// Replaces the provider's signing keys with fresh ones (new kids; the old keys leave the
    /// JWKS) and rewrites [`Self::jwks_path`]. Sessions, grants and tokens survive.
    pub fn rotate_keys(&self) {
        let url = format!("{}/__test/rotate-keys", self.issuer);
        self.json(self.api.post(url).send(), 200);
    }

    /// Runs `tests/oidc/mint.mjs` with `request` (a JSON object; `jwks_file` is filled in) and
    /// returns the compact JWT it prints.
    pub fn mint(&self, request: Value) -> String {
        let mut request = request;
        let Some(fields) = request.as_object_mut() else {
            panic!("a mint request must be a JSON object, not {request}");
        };
        let jwks_file = self.jwks_path().display().to_string();
        fields.insert("jwks_file".to_owned(), Value::String(jwks_file));

        let mut child = Command::new("node")
            .arg(oidc_dir().join("mint.mjs"))
            .current_dir(oidc_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run `node` for mint.mjs: {error}"));
        let mut stdin = child.stdin.take().expect("the child's stdin is piped");
        stdin
            .write_all(request.to_string().as_bytes())
            .expect("write the mint request");
        drop(stdin);

        let output = child.wait_with_output().expect("wait for mint.mjs");
        if !output.status.success() {
            panic!(
                "mint.mjs failed ({}) for {request}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8(output.stdout)
            .expect("mint.mjs prints UTF-8")
            .trim()
            .to_owned()
    }

    /// Plays `user`'s part of a device flow in a fresh browser session: opens
    /// `verification_uri_complete`, confirms the code, signs in (with a second factor when
    /// `mfa`) and checks that the provider reports success. Consent is automatic.
    pub fn complete_device_login(
        &self,
        verification_uri_complete: &str,
        user: &TestUser,
        mfa: bool,
    ) {
        let browser = self.browser(Policy::limited(10));

        // The verification URI answers with a self-submitting form carrying the code and an
        // xsrf token.
        let page = self.open(&browser, verification_uri_complete);
        let form = page.form_with_field(self, "user_code");
        let page = self.submit(&browser, &form);

        // RFC 8628 section 5.4: the person confirms the code the device shows.
        let form = page.form_with_field(self, "confirm");
        let page = self.submit(&browser, &form);

        let page = self.sign_in(&browser, page, user, mfa);
        if !page.body.contains("id=\"device-login-success\"") {
            page.unexpected(self, "the device flow success page");
        }
    }

    /// Plays `user`'s part of an authorization code flow in a fresh browser session: opens
    /// `authorization_url`, signs in and returns the redirect to the client (its loopback
    /// `redirect_uri` with `code` and `state`) without following it. Deliver it to a client
    /// listening there with a plain GET.
    pub fn complete_browser_login(
        &self,
        authorization_url: &str,
        user: &TestUser,
        mfa: bool,
    ) -> String {
        let issuer = Url::parse(&self.issuer).expect("the issuer is a URL");
        let browser = self.browser(Policy::custom(move |attempt| {
            let on_provider = attempt.url().origin() == issuer.origin();
            if on_provider && attempt.previous().len() < 10 {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }));

        let page = self.open(&browser, authorization_url);
        let page = self.sign_in(&browser, page, user, mfa);
        match (page.status, &page.location) {
            (300..=399, Some(location)) => location.clone(),
            _ => page.unexpected(self, "a redirect back to the client"),
        }
    }

    /// Runs a whole device flow for `client_id` as `user` (scope [`DEVICE_FLOW_SCOPE`]) and
    /// returns the token response.
    pub fn device_flow_tokens(&self, client_id: &str, user: &TestUser, mfa: bool) -> TokenResponse {
        let authorization = self.device_authorization(client_id, DEVICE_FLOW_SCOPE);
        self.complete_device_login(&authorization.verification_uri_complete, user, mfa);

        // RFC 8628 section 3.4: poll until the person's part is seen, within a bounded budget.
        let deadline = Instant::now() + POLL_INTERVAL * POLL_LIMIT;
        let form = [
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", authorization.device_code.as_str()),
            ("client_id", client_id),
        ];
        for _ in 0..POLL_LIMIT {
            match self.token_request(&form) {
                Ok(tokens) => return tokens,
                Err(error) if error["error"] == "authorization_pending" => {}
                Err(error) => panic!("device code token request refused: {error}"),
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(POLL_INTERVAL);
        }
        panic!("no tokens for the device code after {POLL_LIMIT} polls");
    }

    /// Runs a whole device flow for `client_id` as `user` and returns the real ID token.
    pub fn device_flow_id_token(&self, client_id: &str, user: &TestUser, mfa: bool) -> String {
        self.device_flow_tokens(client_id, user, mfa).id_token
    }

    /// Asks the device authorization endpoint for a device code and a user code.
    pub fn device_authorization(&self, client_id: &str, scope: &str) -> DeviceAuthorization {
        let endpoint = self.endpoint("device_authorization_endpoint");
        let form = [("client_id", client_id), ("scope", scope)];
        let response = self.api.post(endpoint).form(&form).send();
        serde_json::from_value(self.json(response, 200)).expect("a device authorization response")
    }

    /// Exchanges `refresh_token` for new tokens (a new ID token, and a rotated refresh token).
    pub fn refresh(&self, client_id: &str, refresh_token: &str) -> TokenResponse {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ];
        self.token_request(&form)
            .unwrap_or_else(|error| panic!("refresh token request refused: {error}"))
    }

    /// Posts `form` to the token endpoint; the error body when it is refused.
    pub fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenResponse, Value> {
        let endpoint = self.endpoint("token_endpoint");
        let response = self.api.post(endpoint).form(form).send();
        let response = response.unwrap_or_else(|error| panic!("token request failed: {error}"));

        let status = response.status();
        let body: Value = response.json().expect("the token endpoint answers JSON");
        if !status.is_success() {
            return Err(body);
        }
        Ok(serde_json::from_value(body).expect("a token response with an ID token"))
    }

    fn endpoint(&self, name: &str) -> &str {
        self.discovery[name]
            .as_str()
            .unwrap_or_else(|| panic!("the discovery document has no {name}"))
    }

    fn json(&self, response: reqwest::Result<Response>, expected_status: u16) -> Value {
        let response = response.unwrap_or_else(|error| panic!("request to the provider: {error}"));
        let url = response.url().clone();
        let status = response.status().as_u16();
        let body = response.text().unwrap_or_default();
        if status != expected_status {
            panic!(
                "{url} answered {status}, expected {expected_status}: {body}\nprovider log:\n{}",
                self.log_tail()
            );
        }
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("{url}: not JSON ({error})"))
    }

    fn browser(&self, redirects: Policy) -> Client {
        Client::builder()
            .cookie_store(true)
            .redirect(redirects)
            .timeout(HTTP_TIMEOUT)
            .no_proxy()
            .build()
            .expect("build a browser-like HTTP client")
    }

    fn open(&self, browser: &Client, url: &str) -> Page {
        Page::read(self, browser.get(url).send())
    }

    fn submit(&self, browser: &Client, form: &Form) -> Page {
        Page::read(
            self,
            browser.post(form.action.clone()).form(&form.fields).send(),
        )
    }

    // Fills the login interaction's form; `mfa` ticks the one-time code box.
    fn sign_in(&self, browser: &Client, page: Page, user: &TestUser, mfa: bool) -> Page {
        if !page.url.path().starts_with("/interaction/") {
            page.unexpected(self, "the login interaction");
        }
        let mut form = page.form_with_field(self, "login");
        form.set("login", &user.sub);
        form.set("password", &user.password);
        if mfa {
            form.set("mfa", "1");
        }

        let page = self.submit(browser, &form);
        if page.body.contains("id=\"login-error\"") {
            page.unexpected(
                self,
                &format!("the provider to accept {}'s password", user.sub),
            );
        }
        page
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JOSE header of a compact JWT, decoded without any verification.
pub fn unverified_header(jwt: &str) -> Value {
    jwt_segment(jwt, 0)
}

/// The claims of a compact JWT, decoded without any verification.
pub fn unverified_claims(jwt: &str) -> Value {
    jwt_segment(jwt, 1)
}

fn jwt_segment(jwt: &str, index: usize) -> Value {
    let segment = jwt
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("not a compact JWT: {jwt}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap_or_else(|error| panic!("JWT segment {index} is not base64url: {error}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|error| panic!("JWT segment {index}: {error}"))
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("oidc")
}

fn log_tail(workdir: &Path) -> String {
    let mut log = String::new();
    if let Ok(mut file) = File::open(workdir.join("provider.log")) {
        let _ = file.read_to_string(&mut log);
    }
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A page the browser landed on.
struct Page {
    url: Url,
    status: u16,
    location: Option<String>,
    body: String,
}

impl Page {
    fn read(provider: &OidcProvider, response: reqwest::Result<Response>) -> Page {
        let response = response.unwrap_or_else(|error| {
            panic!(
                "browser request failed: {error}\nprovider log:\n{}",
                provider.log_tail()
            )
        });
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Page {
            url: response.url().clone(),
            status: response.status().as_u16(),
            location,
            body: response.text().unwrap_or_default(),
        }
    }

    // The first form holding a field named `field`, with its action resolved.
    fn form_with_field(&self, provider: &OidcProvider, field: &str) -> Form {
        let found = html::forms(&self.body)
            .into_iter()
            .find(|form| form.fields.iter().any(|(name, _)| name == field));
        let Some(form) = found else {
            self.unexpected(provider, &format!("a form with a `{field}` field"));
        };

        let action = self
            .url
            .join(&form.action)
            .unwrap_or_else(|error| panic!("bad form action {:?}: {error}", form.action));
        Form {
            action,
            fields: form.fields,
        }
    }

    fn unexpected(&self, provider: &OidcProvider, expected: &str) -> ! {
        let excerpt: String = self.body.chars().take(1500).collect();
        panic!(
            "expected {expected}, got {} {} (location {:?}):\n{excerpt}\nprovider log:\n{}",
            self.status,
            self.url,
            self.location,
            provider.log_tail()
        );
    }
}

/// A form ready to submit as `application/x-www-form-urlencoded`.
struct Form {
    action: Url,
    fields: Vec<(String, String)>,
}

impl Form {
    fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(field, _)| field == name) {
            Some(field) => field.1 = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
    }
}

/// Just enough HTML reading to find forms and the fields a browser would submit.
mod html {
    /// A `<form>`: its raw action and the fields a browser submits by default.
    pub struct RawForm {
        pub action: String,
        pub fields: Vec<(String, String)>,
    }

    pub fn forms(html: &str) -> Vec<RawForm> {
        let mut forms = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find("<form") {
            let (form_attributes, after_tag) = tag(&rest[start + "<form".len()..]);
            let end = after_tag.find("</form>").unwrap_or(after_tag.len());
            let inner = &after_tag[..end];
            forms.push(RawForm {
                action: attribute(&form_attributes, "action").unwrap_or_default(),
                fields: fields(inner),
            });
            rest = &after_tag[end..];
        }
        forms
    }

    // Hidden, text and password inputs always count; checkboxes only when checked; buttons
    // only when clicked, which is never here.
    fn fields(inner: &str) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        let mut rest = inner;
        while let Some(start) = rest.find("<input") {
            let (attributes, after_tag) = tag(&rest[start + "<input".len()..]);
            rest = after_tag;

            let Some(name) = attribute(&attributes, "name") else {
                continue;
            };
            let kind = attribute(&attributes, "type").unwrap_or_else(|| "text".to_owned());
            let checked = attributes.iter().any(|(key, _)| key == "checked");
            let value = attribute(&attributes, "value");
            match kind.to_ascii_lowercase().as_str() {
                "submit" | "button" | "image" | "reset" | "file" => {}
                "checkbox" | "radio" if !checked => {}
                "checkbox" | "radio" => fields.push((name, value.unwrap_or_else(|| "on".into()))),
                _ => fields.push((name, value.unwrap_or_default())),
            }
        }
        fields
    }

    fn attribute(attributes: &[(String, String)], name: &str) -> Option<String> {
        attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }

    // Reads a tag's attributes up to its closing `>` (outside quotes); returns them and the
    // text after the tag.
    fn tag(text: &str) -> (Vec<(String, String)>, &str) {
        let mut attributes = Vec::new();
        let mut chars = text.char_indices().peekable();
        loop {
            while chars
                .next_if(|(_, c)| c.is_whitespace() || *c == '/')
                .is_some()
            {}
            let Some(&(start, first)) = chars.peek() else {
                return (attributes, "");
            };
            if first == '>' {
                return (attributes, &text[start + 1..]);
            }

            let mut name = String::new();
            while let Some((_, c)) =
                chars.next_if(|(_, c)| !"=>/".contains(*c) && !c.is_whitespace())
            {
                name.push(c.to_ascii_lowercase());
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}

            let mut value = String::new();
            if chars.next_if(|(_, c)| *c == '=').is_some() {
                while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
                match chars.next_if(|(_, c)| *c == '"' || *c == '\'') {
                    Some((_, quote)) => {
                        for (_, c) in chars.by_ref() {
                            if c == quote {
                                break;
                            }
                            value.push(c);
                        }
                    }
                    None => {
                        while let Some((_, c)) =
                            chars.next_if(|(_, c)| *c != '>' && !c.is_whitespace())
                        {
                            value.push(c);
                        }
                    }
                }
            }
            attributes.push((name, decode_entities(&value)));
        }
    }

    fn decode_entities(text: &str) -> String {
        let mut decoded = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find('&') {
            decoded.push_str(&rest[..start]);
            rest = &rest[start..];
            let entity = rest.find(';').map(|end| (&rest[1..end], end));
            let character = entity.and_then(|(name, _)| match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => numeric_entity(name),
            });
            match (character, entity) {
                (Some(character), Some((_, end))) => {
                    decoded.push(character);
                    rest = &rest[end + 1..];
                }
                _ => {
                    decoded.push('&');
                    rest = &rest[1..];
                }
            }
        }
        decoded.push_str(rest);
        decoded
    }

    fn numeric_entity(name: &str) -> Option<char> {
        let digits = name.strip_prefix('#')?;
        let code = match digits.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => digits.parse().ok()?,
        };
        char::from_u32(code)
    }
}
