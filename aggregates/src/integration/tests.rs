//! Given/when/then tests of the integration aggregate.

use super::*;
use cqrs_es::test::TestFramework;
use IntegrationCommand as C;
use IntegrationEvent as E;

type F = TestFramework<Integration>;

fn t(s: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + i64::from(s), 0).unwrap()
}

fn connected(t_: IntegrationType) -> E {
    E::IntegrationConnected {
        integration_id: "int_1".into(),
        establishment_id: "est_1".into(),
        integration_type: t_,
        display_name: "Main".into(),
        connected_by: "usr_1".into(),
        at: t(0),
    }
}

fn started() -> E {
    E::AuthorizationStarted {
        redirect_url: "https://app.test/back".into(),
        state_hash: "h1".into(),
        state_expires_at: t(600),
        at: t(0),
    }
}

fn cred(id: &str, version: u32) -> CredentialRef {
    CredentialRef {
        secret_id: id.into(),
        version,
    }
}

fn authorized() -> Vec<E> {
    vec![
        connected(IntegrationType::GoogleCalendar),
        started(),
        E::AuthStateConsumed { at: t(10) },
        E::IntegrationAuthorized {
            credential: cred("sec_1", 1),
            scopes: vec!["calendar.events".into()],
            access_expires_at: t(3600),
            at: t(11),
        },
    ]
}

#[test]
fn an_oauth_type_connects_pending_authorisation_and_claims_its_type() {
    let events = F::with(())
        .given_no_previous_events()
        .when(C::Connect {
            integration_id: "int_1".into(),
            establishment_id: "est_1".into(),
            integration_type: IntegrationType::GoogleCalendar,
            display_name: " Main ".into(),
            auth: ConnectAuth::OAuth {
                redirect_url: "https://app.test/back".into(),
                state_hash: "h1".into(),
                state_expires_at: t(600),
            },
            connected_by: "usr_1".into(),
            at: t(0),
        })
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![connected(IntegrationType::GoogleCalendar), started()]
    );
    assert_eq!(
        events[0].unique_claims(),
        vec![ClaimOp::Claim {
            scope: INTEGRATION_CLAIM,
            value: "est_1:google_calendar".into()
        }]
    );
}

#[test]
fn a_key_based_type_connects_with_sealed_credentials_and_refuses_oauth() {
    F::with(())
        .given_no_previous_events()
        .when(C::Connect {
            integration_id: "int_1".into(),
            establishment_id: "est_1".into(),
            integration_type: IntegrationType::Whatsapp,
            display_name: "Main".into(),
            auth: ConnectAuth::Credentials {
                secret_id: "sec_1".into(),
            },
            connected_by: "usr_1".into(),
            at: t(0),
        })
        .then_expect_events(vec![
            connected(IntegrationType::Whatsapp),
            E::CredentialsStored {
                credential: cred("sec_1", 1),
                at: t(0),
            },
        ]);
    F::with(())
        .given_no_previous_events()
        .when(C::Connect {
            integration_id: "int_1".into(),
            establishment_id: "est_1".into(),
            integration_type: IntegrationType::Whatsapp,
            display_name: "Main".into(),
            auth: ConnectAuth::OAuth {
                redirect_url: "https://x".into(),
                state_hash: "h".into(),
                state_expires_at: t(1),
            },
            connected_by: "usr_1".into(),
            at: t(0),
        })
        .then_expect_error(IntegrationError::WrongAuthMode {
            expected: "api_key",
            given: "oauth",
        });
}

#[test]
fn the_oauth_state_is_single_use_bound_and_expiring() {
    let given = vec![connected(IntegrationType::GoogleCalendar), started()];
    F::with(())
        .given(given.clone())
        .when(C::ConsumeAuthState {
            state_hash: "other".into(),
            now: t(1),
        })
        .then_expect_error(IntegrationError::InvalidState);
    F::with(())
        .given(given.clone())
        .when(C::ConsumeAuthState {
            state_hash: "h1".into(),
            now: t(600),
        })
        .then_expect_error(IntegrationError::StateExpired);
    F::with(())
        .given(given.clone())
        .when(C::ConsumeAuthState {
            state_hash: "h1".into(),
            now: t(5),
        })
        .then_expect_events(vec![E::AuthStateConsumed { at: t(5) }]);
    let mut used = given;
    used.push(E::AuthStateConsumed { at: t(5) });
    F::with(())
        .given(used)
        .when(C::ConsumeAuthState {
            state_hash: "h1".into(),
            now: t(6),
        })
        .then_expect_error(IntegrationError::StateUsed);
}

#[test]
fn authorising_needs_a_consumed_state_and_versions_the_credentials() {
    F::with(())
        .given(vec![connected(IntegrationType::GoogleCalendar), started()])
        .when(C::Authorize {
            secret_id: "sec_1".into(),
            scopes: vec![],
            access_expires_at: t(3600),
            at: t(1),
        })
        .then_expect_error(IntegrationError::NotAuthorizing);
    F::with(())
        .given(authorized())
        .when(C::RecordTokenRefresh {
            secret_id: "sec_2".into(),
            access_expires_at: t(7200),
            at: t(3500),
        })
        .then_expect_events(vec![E::TokenRefreshed {
            credential: cred("sec_2", 2),
            access_expires_at: t(7200),
            at: t(3500),
        }]);
}

#[test]
fn a_refused_refresh_token_needs_reauthorisation_and_makes_it_unusable() {
    let mut i = Integration::default();
    for e in authorized() {
        i.apply(e);
    }
    assert_eq!(i.usable(), Ok(&cred("sec_1", 1)));
    assert!(!i.needs_refresh(t(100), 60));
    assert!(i.needs_refresh(t(3550), 60));
    let events = i
        .decide(C::MarkNeedsReauth {
            reason: "invalid_grant".into(),
            at: t(20),
        })
        .unwrap();
    for e in events {
        i.apply(e);
    }
    assert_eq!(i.status, IntegrationStatus::NeedsReauth);
    assert_eq!(i.usable(), Err(Unusable::NeedsReauth));
    assert_eq!(
        i.decide(C::MarkNeedsReauth {
            reason: "again".into(),
            at: t(21)
        }),
        Ok(vec![]),
        "marking twice changes nothing"
    );
}

#[test]
fn disabling_makes_it_unusable_and_is_idempotent() {
    let mut given = authorized();
    F::with(())
        .given(given.clone())
        .when(C::SetEnabled {
            enabled: true,
            by: "usr_1".into(),
            at: t(30),
        })
        .then_expect_events(vec![]);
    given.push(E::IntegrationDisabled {
        by: "usr_1".into(),
        at: t(30),
    });
    let mut i = Integration::default();
    for e in given {
        i.apply(e);
    }
    assert_eq!(i.usable(), Err(Unusable::Disabled));
}

#[test]
fn oauth_credentials_are_not_rotated_by_hand_but_keys_are() {
    F::with(())
        .given(authorized())
        .when(C::RotateCredentials {
            secret_id: "sec_9".into(),
            rotated_by: "usr_1".into(),
            at: t(40),
        })
        .then_expect_error(IntegrationError::NotRotatable);
    F::with(())
        .given(vec![
            connected(IntegrationType::CrmWebhook),
            E::CredentialsStored {
                credential: cred("sec_1", 1),
                at: t(0),
            },
        ])
        .when(C::RotateCredentials {
            secret_id: "sec_2".into(),
            rotated_by: "usr_1".into(),
            at: t(40),
        })
        .then_expect_events(vec![E::CredentialsRotated {
            credential: cred("sec_2", 2),
            rotated_by: "usr_1".into(),
            at: t(40),
        }]);
}

#[test]
fn revoking_releases_the_claim_and_ends_the_integration() {
    let events = F::with(())
        .given(authorized())
        .when(C::Revoke {
            revoked_by: "usr_1".into(),
            at: t(50),
        })
        .inspect_result()
        .unwrap();
    assert_eq!(
        events[0].unique_claims(),
        vec![ClaimOp::Release {
            scope: INTEGRATION_CLAIM,
            value: "est_1:google_calendar".into()
        }]
    );
    let mut given = authorized();
    given.extend(events);
    F::with(())
        .given(given)
        .when(C::SetEnabled {
            enabled: true,
            by: "usr_1".into(),
            at: t(51),
        })
        .then_expect_error(IntegrationError::Revoked);
}

#[test]
fn display_names_are_bounded() {
    F::with(())
        .given(authorized())
        .when(C::Rename {
            display_name: "\u{7}".into(),
            at: t(1),
        })
        .then_expect_error(IntegrationError::InvalidDisplayName);
}

#[test]
fn no_event_has_room_for_a_secret() {
    // Events carry references and hashes only: serialised, they hold no token-shaped field.
    let json = serde_json::to_string(&authorized()).unwrap();
    for word in ["token", "secret\"", "password", "code\""] {
        assert!(!json.contains(word), "{word} in {json}");
    }
}
