//! Login, logout, throttling, password reset, `/me`.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD};
use tests::fixtures::Tenant;
use tests::{eventually, secs, TestApp};

#[tokio::test]
async fn login_answers_exactly_the_appendix_a1_shape() {
    let app = TestApp::spawn().await;
    let Tenant { est, .. } = app.tenant("Helios").await;
    let r = app
        .request(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["access_token", "expires_in", "token_type", "user"]);
    assert_eq!(r.body["token_type"], "bearer");
    assert_eq!(r.body["expires_in"], 3600);
    let mut user_keys: Vec<&String> = r.body["user"].as_object().unwrap().keys().collect();
    user_keys.sort();
    assert_eq!(
        user_keys,
        ["default_establishment_id", "display_name", "email", "id"]
    );
    assert!(r.body["user"]["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(r.body["user"]["default_establishment_id"], est.as_str());

    let me = app
        .get("/me", r.body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["email"], ADMIN_EMAIL);
    assert_eq!(
        me.body["memberships"],
        json!([{"establishment_id": est, "role": "admin"}])
    );
}

#[tokio::test]
async fn wrong_credentials_are_401_and_do_not_reveal_which_part_was_wrong() {
    let app = TestApp::spawn().await;
    let wrong_pw = app
        .request(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": "nope-nope-nope"})),
        )
        .await;
    let no_user = app
        .request(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "ghost@example.com", "password": "nope-nope-nope"})),
        )
        .await;
    assert_eq!(wrong_pw.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_user.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_pw.body, no_user.body);
    assert_eq!(wrong_pw.code(), "invalid_credentials");
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_with_retry_after() {
    let app = TestApp::spawn().await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = app
            .request(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": ADMIN_EMAIL, "password": "wrong-password"})),
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    // Even the right password is refused while throttled.
    let r = app
        .request(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 15 * 60 + 1, "{retry}");
}

#[tokio::test]
async fn logout_ends_the_token_at_once() {
    let app = TestApp::spawn().await;
    let token = app.root_token().await;
    assert_eq!(app.get("/me", &token).await.status, StatusCode::OK);
    let r = app
        .request(Method::POST, "/auth/logout", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.get("/me", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
    // Other sessions of the same user live on.
    let other = app.root_token().await;
    assert_eq!(app.get("/me", &other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn requests_without_or_with_a_forged_token_are_401() {
    let app = TestApp::spawn().await;
    let r = app.request(Method::GET, "/me", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .get("/me", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
}

/// The reset token mailed to the platform admin. `/auth/forgot-password` answers before it
/// does anything (so its timing reveals nothing), in a task of its own that the control plane
/// does not count as background work: `settle` cannot see it, so the test looks for the mail.
async fn reset_mail(app: &TestApp) -> String {
    let smtp = app.smtp.as_ref().unwrap();
    eventually("the password reset mail", secs(15), async || {
        smtp.token(ADMIN_EMAIL, "Reset token:")
            .ok_or_else(|| format!("mails: {:?}", smtp.mails()))
    })
    .await
}

#[tokio::test]
async fn a_mailed_reset_token_sets_a_new_password_once_and_ends_old_sessions() {
    let app = TestApp::builder().smtp().spawn().await;
    let old_session = app.root_token().await;
    let r = app
        .request(
            Method::POST,
            "/auth/forgot-password",
            None,
            Some(json!({"email": ADMIN_EMAIL})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let token = reset_mail(&app).await;

    let r = app
        .request(
            Method::POST,
            "/auth/reset-password",
            None,
            Some(json!({"token": token, "password": "short"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "policy first: {}",
        r.text
    );

    let r = app
        .request(
            Method::POST,
            "/auth/reset-password",
            None,
            Some(json!({"token": token, "password": "brand-new-password"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        app.get("/me", &old_session).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.login(ADMIN_EMAIL, "brand-new-password").await;
    let r = app
        .request(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let again = app
        .request(
            Method::POST,
            "/auth/reset-password",
            None,
            Some(json!({"token": token, "password": "another-password"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.code(), "invalid_token");
    let forged = app
        .request(Method::POST, "/auth/reset-password", None, Some(json!({"token": "usr_x:rst_y.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "password": "another-password"})))
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn forgot_password_answers_the_same_for_unknown_accounts_and_sends_nothing() {
    let app = TestApp::builder().smtp().spawn().await;
    for email in ["ghost@example.com", "not an email", ADMIN_EMAIL] {
        let r = app
            .request(
                Method::POST,
                "/auth/forgot-password",
                None,
                Some(json!({"email": email})),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{email}");
        assert_eq!(r.body, json!({"status": "accepted"}));
    }
    reset_mail(&app).await;
    // The requests for the other addresses were made first, and their tasks only look the
    // address up (the reset mail's took longer: a command, then the mail); once the system is
    // quiet, the one mail is all there is. (Those tasks are not background work the control
    // plane counts, so nothing can wait for them: see `reset_mail`.)
    app.settle().await;
    let mails = app.smtp.as_ref().unwrap().mails();
    assert_eq!(mails.len(), 1, "only the real account gets a mail");
}

#[tokio::test]
async fn an_expired_reset_token_is_refused() {
    use aggregates::user::{User, UserCommand};
    use control_plane::store::{CommandContext, ExecOptions};
    let app = TestApp::spawn().await;
    let user_id: String = sqlx::query_scalar("SELECT id FROM rm_users WHERE email = $1")
        .bind(ADMIN_EMAIL)
        .fetch_one(app.pool())
        .await
        .unwrap();
    let reset_id = "rst_01JAAAAAAAAAAAAAAAAAAAAAAA";
    let (token, hash) =
        control_plane::auth::tokens::one_time_token(&format!("{user_id}:{reset_id}"));
    app.state()
        .bus
        .execute::<User>(
            &user_id,
            UserCommand::RequestPasswordReset {
                reset_id: reset_id.into(),
                token_hash: hash,
                expires_at: chrono::Utc::now() - chrono::Duration::seconds(1),
            },
            &CommandContext::system("test"),
            ExecOptions::default(),
        )
        .await
        .unwrap();
    let r = app
        .request(
            Method::POST,
            "/auth/reset-password",
            None,
            Some(json!({"token": token, "password": "brand-new-password"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "token_expired");
}

#[tokio::test]
async fn parallel_wrong_logins_are_counted_before_they_are_judged() {
    let app = TestApp::spawn().await;
    let attempts = (0..20).map(|_| {
        app.request(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": "wrong-password"})),
        )
    });
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    let judged = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (judged, throttled),
        (5, 15),
        "only the first five of twenty parallel guesses may be checked: {statuses:?}"
    );
}

#[tokio::test]
async fn the_login_throttle_is_shared_by_every_process() {
    let first = TestApp::spawn().await;
    let second = TestApp::builder().database(&first.db_url).spawn().await;
    let wrong = json!({"email": ADMIN_EMAIL, "password": "wrong-password"});
    for app in [&first, &first, &first, &second, &second] {
        let r = app
            .request(Method::POST, "/auth/login", None, Some(wrong.clone()))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = first
        .request(Method::POST, "/auth/login", None, Some(wrong))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
}

#[tokio::test]
async fn failures_from_another_client_never_lock_the_owner_out() {
    let app = TestApp::spawn().await;
    let throttle = &app.state().throttle;
    let attacker = throttle.login_keys("victim@example.com", "203.0.113.7");
    let mut last = None;
    for _ in 0..50 {
        last = throttle.attempt(&attacker).await.unwrap();
    }
    assert!(last.is_some(), "the attacking client is throttled");
    let owner = throttle.login_keys("victim@example.com", "198.51.100.4");
    assert_eq!(
        throttle.attempt(&owner).await.unwrap(),
        None,
        "the owner's own client is not"
    );
}

#[tokio::test]
async fn reset_mails_are_throttled_per_address_whether_or_not_it_has_an_account() {
    let app = TestApp::spawn().await;
    for email in [ADMIN_EMAIL, "nobody@example.com"] {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let r = app
                .request(
                    Method::POST,
                    "/auth/forgot-password",
                    None,
                    Some(json!({ "email": email })),
                )
                .await;
            statuses.push(r.status.as_u16());
        }
        assert_eq!(statuses, [202, 202, 202, 429], "{email}");
    }
    app.settle().await;
    let resets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'PasswordResetRequested'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(
        resets, 3,
        "each accepted request for the account appends once"
    );
}

/// Each process keeps resolved tokens in memory (docs/security.md): a logout or a removed
/// membership in one process reaches the others through the database's notifications.
#[tokio::test]
async fn a_logout_or_a_removed_membership_in_one_process_reaches_the_others() {
    let a = TestApp::spawn().await;
    let b = TestApp::builder().database(&a.db_url).spawn().await;
    let root = a.root_token().await;
    let est = a.create_establishment(&root, "Two processes").await;
    let member = a.seed_member(&est, "two@example.com", "operator").await;
    let me = a.get("/me", &member).await;
    let user_id = me.body["user"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", me.text))
        .to_string();
    // B has resolved (and keeps) both tokens.
    for _ in 0..2 {
        assert_eq!(b.get("/me", &root).await.status, StatusCode::OK);
        let r = b.get(&format!("/establishments/{est}"), &member).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }

    // The member is removed through A: B stops showing them the establishment.
    let r = a
        .delete(&format!("/establishments/{est}/users/{user_id}"), &root)
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    eventually("B sees the membership gone", secs(10), async || {
        let r = b.get(&format!("/establishments/{est}"), &member).await;
        (r.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;

    // The root logs out through A: B refuses the token.
    let r = a
        .request(Method::POST, "/auth/logout", Some(&root), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(a.get("/me", &root).await.status, StatusCode::UNAUTHORIZED);
    eventually("B refuses the ended session", secs(10), async || {
        (b.get("/me", &root).await.status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
}
