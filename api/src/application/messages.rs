//! The mails the control plane writes (invitations, password resets).

use crate::adapters::smtp::Mail;

pub fn invitation(to: &str, establishment: &str, role: &str, link_base: &str, token: &str) -> Mail {
    Mail {
        to: to.to_string(),
        subject: format!("You are invited to {establishment}"),
        body: format!(
            "You have been invited to join {establishment} as {role}.\n\n\
             Accept the invitation: {link_base}/accept-invite?token={token}\n\n\
             Invitation token: {token}\n\n\
             The invitation expires in 7 days and can be used once.\n"
        ),
    }
}

pub fn password_reset(to: &str, link_base: &str, token: &str) -> Mail {
    Mail {
        to: to.to_string(),
        subject: "Reset your password".to_string(),
        body: format!(
            "Someone asked to reset the password of this account.\n\n\
             Reset it: {link_base}/reset-password?token={token}\n\n\
             Reset token: {token}\n\n\
             The token is valid for one hour and can be used once. If you did not ask, ignore this mail.\n"
        ),
    }
}
