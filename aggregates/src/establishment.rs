//! Establishment aggregate: a tenant, its settings and its members with their roles.
//! Membership lives here because its rule ("an establishment keeps at least one admin") spans
//! all members.

use std::collections::BTreeMap;

use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::common::{Locale, Role, Timezone, UniqueClaims};

#[derive(Debug, Clone, PartialEq)]
pub enum EstablishmentCommand {
    Create {
        establishment_id: String,
        name: String,
        timezone: Timezone,
        locale: Locale,
        /// The creator becomes the first admin.
        created_by: String,
    },
    Update {
        name: Option<String>,
        timezone: Option<Timezone>,
        locale: Option<Locale>,
    },
    /// Adds a member; a no-op when the user already belongs (their role is kept).
    AddMember {
        user_id: String,
        role: Role,
    },
    ChangeMemberRole {
        user_id: String,
        role: Role,
    },
    RemoveMember {
        user_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EstablishmentEvent {
    EstablishmentCreated {
        establishment_id: String,
        name: String,
        timezone: Timezone,
        locale: Locale,
        created_by: String,
    },
    EstablishmentUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<Timezone>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        locale: Option<Locale>,
    },
    MemberAdded {
        user_id: String,
        role: Role,
    },
    MemberRoleChanged {
        user_id: String,
        from: Role,
        to: Role,
    },
    MemberRemoved {
        user_id: String,
        role: Role,
    },
}
crate::domain_event!(EstablishmentEvent {
    EstablishmentCreated,
    EstablishmentUpdated,
    MemberAdded,
    MemberRoleChanged,
    MemberRemoved
});
impl UniqueClaims for EstablishmentEvent {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EstablishmentError {
    #[error("the establishment already exists")]
    AlreadyExists,
    #[error("the establishment does not exist")]
    NotFound,
    #[error("the user is not a member of this establishment")]
    NotAMember,
    #[error("the last admin of an establishment cannot be demoted or removed")]
    LastAdmin,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Establishment {
    pub id: String,
    pub name: String,
    pub timezone: Option<Timezone>,
    pub locale: Option<Locale>,
    pub members: BTreeMap<String, Role>,
}

impl Establishment {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    fn admins(&self) -> usize {
        self.members.values().filter(|r| **r == Role::Admin).count()
    }

    fn would_lose_last_admin(&self, user_id: &str) -> bool {
        self.members.get(user_id) == Some(&Role::Admin) && self.admins() == 1
    }

    pub fn decide(
        &self,
        command: EstablishmentCommand,
    ) -> Result<Vec<EstablishmentEvent>, EstablishmentError> {
        use EstablishmentCommand as C;
        use EstablishmentEvent as E;
        if !self.exists() && !matches!(command, C::Create { .. }) {
            return Err(EstablishmentError::NotFound);
        }
        match command {
            C::Create {
                establishment_id,
                name,
                timezone,
                locale,
                created_by,
            } => {
                if self.exists() {
                    return Err(EstablishmentError::AlreadyExists);
                }
                Ok(vec![
                    E::EstablishmentCreated {
                        establishment_id,
                        name,
                        timezone,
                        locale,
                        created_by: created_by.clone(),
                    },
                    E::MemberAdded {
                        user_id: created_by,
                        role: Role::Admin,
                    },
                ])
            }
            C::Update {
                name,
                timezone,
                locale,
            } => {
                let name = name.filter(|n| *n != self.name);
                let timezone = timezone.filter(|t| Some(*t) != self.timezone);
                let locale = locale.filter(|l| Some(l) != self.locale.as_ref());
                if name.is_none() && timezone.is_none() && locale.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![E::EstablishmentUpdated {
                    name,
                    timezone,
                    locale,
                }])
            }
            C::AddMember { user_id, role } => {
                if self.members.contains_key(&user_id) {
                    return Ok(vec![]);
                }
                Ok(vec![E::MemberAdded { user_id, role }])
            }
            C::ChangeMemberRole { user_id, role } => {
                let from = *self
                    .members
                    .get(&user_id)
                    .ok_or(EstablishmentError::NotAMember)?;
                if from == role {
                    return Ok(vec![]);
                }
                if self.would_lose_last_admin(&user_id) {
                    return Err(EstablishmentError::LastAdmin);
                }
                Ok(vec![E::MemberRoleChanged {
                    user_id,
                    from,
                    to: role,
                }])
            }
            C::RemoveMember { user_id } => {
                let role = *self
                    .members
                    .get(&user_id)
                    .ok_or(EstablishmentError::NotAMember)?;
                if self.would_lose_last_admin(&user_id) {
                    return Err(EstablishmentError::LastAdmin);
                }
                Ok(vec![E::MemberRemoved { user_id, role }])
            }
        }
    }
}

impl Aggregate for Establishment {
    const TYPE: &'static str = "Establishment";
    type Command = EstablishmentCommand;
    type Event = EstablishmentEvent;
    type Error = EstablishmentError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: EstablishmentEvent) {
        use EstablishmentEvent as E;
        match event {
            E::EstablishmentCreated {
                establishment_id,
                name,
                timezone,
                locale,
                ..
            } => {
                self.id = establishment_id;
                self.name = name;
                self.timezone = Some(timezone);
                self.locale = Some(locale);
            }
            E::EstablishmentUpdated {
                name,
                timezone,
                locale,
            } => {
                if let Some(n) = name {
                    self.name = n;
                }
                if let Some(t) = timezone {
                    self.timezone = Some(t);
                }
                if let Some(l) = locale {
                    self.locale = Some(l);
                }
            }
            E::MemberAdded { user_id, role } => {
                self.members.insert(user_id, role);
            }
            E::MemberRoleChanged { user_id, to, .. } => {
                self.members.insert(user_id, to);
            }
            E::MemberRemoved { user_id, .. } => {
                self.members.remove(&user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use EstablishmentCommand as C;
    use EstablishmentEvent as E;

    type F = TestFramework<Establishment>;

    fn created() -> Vec<E> {
        vec![
            E::EstablishmentCreated {
                establishment_id: "est_1".into(),
                name: "Helios".into(),
                timezone: "America/Sao_Paulo".parse().unwrap(),
                locale: "pt-BR".parse().unwrap(),
                created_by: "usr_admin".into(),
            },
            E::MemberAdded {
                user_id: "usr_admin".into(),
                role: Role::Admin,
            },
        ]
    }

    #[test]
    fn the_creator_becomes_the_first_admin() {
        F::with(())
            .given_no_previous_events()
            .when(C::Create {
                establishment_id: "est_1".into(),
                name: "Helios".into(),
                timezone: "America/Sao_Paulo".parse().unwrap(),
                locale: "pt-BR".parse().unwrap(),
                created_by: "usr_admin".into(),
            })
            .then_expect_events(created());
    }

    #[test]
    fn the_last_admin_cannot_be_demoted_or_removed() {
        F::with(())
            .given(created())
            .when(C::ChangeMemberRole {
                user_id: "usr_admin".into(),
                role: Role::Viewer,
            })
            .then_expect_error(EstablishmentError::LastAdmin);
        F::with(())
            .given(created())
            .when(C::RemoveMember {
                user_id: "usr_admin".into(),
            })
            .then_expect_error(EstablishmentError::LastAdmin);
    }

    #[test]
    fn an_admin_can_be_demoted_when_another_admin_remains() {
        F::with(())
            .given(created())
            .and(vec![E::MemberAdded {
                user_id: "usr_2".into(),
                role: Role::Admin,
            }])
            .when(C::ChangeMemberRole {
                user_id: "usr_admin".into(),
                role: Role::Operator,
            })
            .then_expect_events(vec![E::MemberRoleChanged {
                user_id: "usr_admin".into(),
                from: Role::Admin,
                to: Role::Operator,
            }]);
    }

    #[test]
    fn adding_an_existing_member_changes_nothing() {
        F::with(())
            .given(created())
            .when(C::AddMember {
                user_id: "usr_admin".into(),
                role: Role::Viewer,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_update_records_only_what_changed() {
        F::with(())
            .given(created())
            .when(C::Update {
                name: Some("Helios".into()),
                timezone: Some("Europe/Paris".parse().unwrap()),
                locale: None,
            })
            .then_expect_events(vec![E::EstablishmentUpdated {
                name: None,
                timezone: Some("Europe/Paris".parse().unwrap()),
                locale: None,
            }]);
    }

    #[test]
    fn role_changes_need_a_member() {
        F::with(())
            .given(created())
            .when(C::ChangeMemberRole {
                user_id: "usr_x".into(),
                role: Role::Viewer,
            })
            .then_expect_error(EstablishmentError::NotAMember);
    }
}
