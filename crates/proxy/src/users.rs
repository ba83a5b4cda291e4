//! Client credentials from the config, turned into SCRAM verifiers once per
//! load (never per login).

use std::collections::HashMap;

use crate::auth::scram::Verifier;
use pgbalancer_config::Config;

pub(crate) struct UserAuth {
    pub verifier: Verifier,
    /// Set when the config holds the password itself; then pgbalancer can
    /// also log in to servers with it.
    pub plaintext: Option<String>,
}

pub(crate) struct UserDb {
    pub users: HashMap<String, UserAuth>,
    /// Secret behind the fake verifiers of unknown users.
    pub dummy_secret: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
#[error("users[{index}].password: {message}")]
pub struct UserError {
    pub index: usize,
    pub message: String,
}

impl UserDb {
    /// `dummy_secret` must stay the same for the life of the process (a
    /// reload keeps it): a fake verifier whose salt changed between two
    /// logins would give an unknown user away.
    pub fn from_config(config: &Config, dummy_secret: [u8; 32]) -> Result<UserDb, UserError> {
        let mut users = HashMap::new();
        for (index, u) in config.users.iter().enumerate() {
            let Some(pw) = &u.password else { continue };
            let auth = if pw.starts_with("SCRAM-SHA-256$") {
                let verifier = Verifier::parse(pw).map_err(|e| UserError { index, message: e.to_string() })?;
                UserAuth { verifier, plaintext: None }
            } else {
                UserAuth { verifier: Verifier::generate(pw), plaintext: Some(pw.clone()) }
            };
            users.insert(u.name.clone(), auth);
        }
        Ok(UserDb { users, dummy_secret })
    }
}
