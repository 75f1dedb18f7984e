//! `TestApp`: the real server on a random port against a fresh database.

use std::net::SocketAddr;
use std::time::Duration;

use control_plane::config::Config;
use control_plane::server::App;
use control_plane::state::AppState;
use reqwest::{Method, StatusCode};
use serde_json::json;
pub use serde_json::Value as Json;

use crate::smtp::SmtpServer;

pub const ADMIN_EMAIL: &str = "root@platform.test";
pub const ADMIN_PASSWORD: &str = "root-password-123";
/// How long [`TestApp::settle`] waits for the system to get quiet. Generous: it only runs out
/// when something is wrong (a worker stuck, work that keeps making work).
pub const SETTLE_BUDGET: Duration = Duration::from_secs(60);

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub db_url: String,
    pub smtp: Option<SmtpServer>,
    app: Option<App>,
}

/// A response: status, headers and the body as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Json,
    pub text: String,
}

impl Resp {
    /// The error code of a contract-shaped error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

type ConfigTweak = Box<dyn FnOnce(&mut Config) + Send>;

pub struct Builder {
    smtp: bool,
    tweak: Vec<ConfigTweak>,
    db_url: Option<String>,
    twilio: Option<(String, String, String)>,
}

impl Builder {
    pub fn smtp(mut self) -> Self {
        self.smtp = true;
        self
    }

    pub fn config(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweak.push(Box::new(f));
        self
    }

    /// Wired to the Twilio stand-in: its credentials and API base URL, and a public base URL
    /// on the loopback listen port (the URL webhooks are signed for). Applied after every
    /// other tweak, so it sees the final listen address (a free port on 127.0.0.1 if none).
    pub fn twilio(mut self, twilio: &crate::twilio::TwilioStandIn) -> Self {
        self.twilio = Some((
            twilio.account_sid.clone(),
            twilio.auth_token.clone(),
            twilio.base_url.clone(),
        ));
        self
    }

    /// Reuse an existing database (e.g. to restart the server on the same data).
    pub fn database(mut self, url: &str) -> Self {
        self.db_url = Some(url.to_string());
        self
    }

    pub async fn spawn(self) -> TestApp {
        crate::init_logs();
        let db_url = match self.db_url {
            Some(u) => u,
            None => crate::db::fresh_database().await,
        };
        let smtp = match self.smtp {
            true => Some(SmtpServer::start().await),
            false => None,
        };
        let mut config = Config::for_database(&db_url);
        config.bootstrap_admin_email = Some(ADMIN_EMAIL.into());
        config.bootstrap_admin_password = Some(ADMIN_PASSWORD.into());
        config.smtp_url = smtp.as_ref().map(|s| s.url());
        config.projector_poll_ms = 50;
        for f in self.tweak {
            f(&mut config);
        }
        if let Some((sid, token, base)) = self.twilio {
            if config.listen_addr.port() == 0 {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
                config.listen_addr = l.local_addr().expect("addr");
            }
            config.public_base_url =
                Some(format!("http://127.0.0.1:{}", config.listen_addr.port()));
            config.twilio_account_sid = Some(sid);
            config.twilio_auth_token = Some(token);
            config.twilio_api_base_url = base;
        }
        let app = control_plane::server::start(config)
            .await
            .expect("server starts");
        let addr = app.addr;
        TestApp {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("client"),
            db_url,
            smtp,
            app: Some(app),
        }
    }
}

impl TestApp {
    pub fn builder() -> Builder {
        Builder {
            smtp: false,
            tweak: Vec::new(),
            db_url: None,
            twilio: None,
        }
    }

    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    pub fn state(&self) -> &AppState {
        &self.app.as_ref().expect("running").state
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.state().pool
    }

    /// Waits until the system is quiet: every projector has caught up with every event
    /// committed so far and no background work (placement, handoff, mail, analysis) is in
    /// flight, repeated until a round commits nothing new. After an action whose effects are
    /// asynchronous (a webhook, a runtime event, a worker outcome), settle, then assert.
    ///
    /// It does not wait for what happens outside the process (Docker, a runtime's own
    /// timeline, another control plane): see [`crate::wait::eventually`].
    ///
    /// A live call's sentiment recomputation counts as background work and is throttled
    /// (`Config::sentiment_interval_ms`, 10 s by default): a settle right after new customer
    /// segments of a call whose sentiment was just computed waits for the throttle. No test
    /// settles there, so test control planes keep the default: at 100 ms, the 10,000-event
    /// ingestion test recomputes 40 long transcripts ten times a second and the whole suite
    /// takes twice as long.
    pub async fn settle(&self) {
        let app = self.app.as_ref().expect("running");
        if let Err(e) = app.settle(SETTLE_BUDGET).await {
            panic!("the control plane did not settle within {SETTLE_BUDGET:?}: {e:#}");
        }
    }

    /// The URL Twilio (and the Twilio stand-in) reaches this control plane at.
    pub fn public_url(&self, path: &str) -> String {
        format!("{}{path}", self.state().config.public_base_url())
    }

    /// The text after `marker` in the mail sent to `to` (a token), once every mail queued so
    /// far has been handed to the SMTP server. Panics when no such mail was sent.
    pub async fn mailed_token(&self, to: &str, marker: &str) -> String {
        self.settle().await;
        let smtp = self
            .smtp
            .as_ref()
            .expect("a control plane built with .smtp()");
        smtp.token(to, marker).unwrap_or_else(|| {
            panic!(
                "no mail to {to} containing {marker:?} was sent; got {:?}",
                smtp.mails()
            )
        })
    }

    /// Stops the server (the database stays, for a restart on the same data).
    pub async fn stop(mut self) -> String {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        self.db_url.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Json>,
    ) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        Self::read(res).await
    }

    pub async fn read(res: reqwest::Response) -> Resp {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Json::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Json) -> Resp {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Json) -> Resp {
        self.request(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// Logs in; panics unless it succeeds.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self
            .request(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "login of {email} failed: {}",
            r.text
        );
        r.body["access_token"].as_str().expect("token").to_string()
    }

    /// The bootstrap platform admin's token.
    pub async fn root_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Creates an establishment as `token`'s user; returns its id.
    pub async fn create_establishment(&self, token: &str, name: &str) -> String {
        let r = self
            .post(
                "/establishments",
                token,
                json!({"name": name, "timezone": "America/Sao_Paulo", "locale": "pt-BR"}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "create establishment: {}",
            r.text
        );
        r.body["id"].as_str().expect("id").to_string()
    }

    /// Creates a user with a membership directly through the command bus (fast test setup;
    /// the invitation flow itself is tested end to end elsewhere). Returns a token.
    pub async fn seed_member(&self, establishment_id: &str, email: &str, role: &str) -> String {
        use aggregates::establishment::{Establishment, EstablishmentCommand};
        use aggregates::user::{User, UserCommand};
        use control_plane::store::{CommandContext, ExecOptions};
        let state = self.state();
        let ctx = CommandContext::system("test-seed");
        let existing = state
            .bus
            .store()
            .claim_owner(aggregates::user::EMAIL_CLAIM, email)
            .await
            .expect("claims");
        let user_id = match existing {
            Some(id) => id,
            None => {
                let id = control_plane::ids::new_id("usr");
                let outcome = state
                    .bus
                    .execute::<User>(
                        &id,
                        UserCommand::Register {
                            user_id: id.clone(),
                            email: email.parse().expect("email"),
                            display_name: email.split('@').next().unwrap_or("user").into(),
                            password_hash: Some(
                                control_plane::auth::password::hash("member-password-1")
                                    .await
                                    .expect("hash"),
                            ),
                            platform_admin: false,
                        },
                        &ctx,
                        ExecOptions::default(),
                    )
                    .await
                    .expect("register");
                state.bus.visible(&outcome).await;
                id
            }
        };
        let outcome = state
            .bus
            .execute::<Establishment>(
                establishment_id,
                EstablishmentCommand::AddMember {
                    user_id,
                    role: role.parse().expect("role"),
                },
                &ctx.clone().in_establishment(establishment_id),
                ExecOptions::default(),
            )
            .await
            .expect("add member");
        state.bus.visible(&outcome).await;
        self.login(email, "member-password-1").await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            app.abort();
        }
    }
}
