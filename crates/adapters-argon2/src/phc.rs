//! The Argon2 work itself, synchronous and CPU-bound: hashing into a PHC string, and checking a
//! password against a stored PHC string with the parameters embedded in it. Only pool threads
//! call these.

use argon2::{
    Algorithm, Argon2, Params, PasswordHasher as _, Version,
    password_hash::{self, SaltString, rand_core::OsRng},
};
use registrar_application::ports::{HashError, Verification};
use registrar_domain::PasswordHash;

/// Hashes `password` with Argon2id v0x13, `params` and a fresh 16-byte salt from the OS.
pub(crate) fn hash(params: &Params, password: &str) -> Result<PasswordHash, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| HashError::Failed(format!("Argon2 could not hash: {error}")))?
        .to_string();
    PasswordHash::from_phc(phc)
        .map_err(|error| HashError::Failed(format!("Argon2 produced a bad PHC string: {error}")))
}

/// Checks `password` against `stored`, using the algorithm, version and costs written in it.
///
/// A match is `stale` when `stored` is weaker than `configured`: not Argon2id, not version
/// 0x13, any of `m`, `t`, `p` lower, or a shorter output.
pub(crate) fn verify(
    configured: &Params,
    password: &str,
    stored: &PasswordHash,
) -> Result<Verification, HashError> {
    let parsed = password_hash::PasswordHash::new(stored.as_str())
        .map_err(|error| unusable("does not parse", &error))?;
    let algorithm =
        Algorithm::try_from(parsed.algorithm).map_err(|error| unusable("is not Argon2", &error))?;
    // Argon2 hashes without a version predate version 0x13: the reference implementation reads
    // them as 0x10.
    let version = parsed
        .version
        .map_or(Ok(Version::V0x10), Version::try_from)
        .map_err(|error| unusable("has an unknown Argon2 version", &error))?;
    let params =
        Params::try_from(&parsed).map_err(|error| unusable("has invalid parameters", &error))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(HashError::Failed(
            "the stored password hash has no salt or no output".to_owned(),
        ));
    };
    let computed = Argon2::new(algorithm, version, params.clone())
        .hash_password(password.as_bytes(), salt)
        .map_err(|error| unusable("cannot be recomputed", &error))?;
    // `Output`'s equality is constant-time.
    if computed.hash.as_ref() != Some(&expected) {
        return Ok(Verification::Mismatch);
    }
    let stale = algorithm != Algorithm::Argon2id
        || version != Version::V0x13
        || params.m_cost() < configured.m_cost()
        || params.t_cost() < configured.t_cost()
        || params.p_cost() < configured.p_cost()
        || expected.len()
            < configured
                .output_len()
                .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    Ok(Verification::Match { stale })
}

fn unusable(why: &str, error: &dyn std::fmt::Display) -> HashError {
    HashError::Failed(format!("the stored password hash {why}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(m: u32, t: u32, p: u32) -> Params {
        Params::new(m, t, p, None).unwrap()
    }

    fn phc(algorithm: Algorithm, version: Version, params: Params, password: &str) -> PasswordHash {
        let salt = SaltString::generate(&mut OsRng);
        let phc = Argon2::new(algorithm, version, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string();
        PasswordHash::from_phc(phc).unwrap()
    }

    #[test]
    fn a_hash_carries_its_algorithm_version_and_costs() {
        let hash = hash(&params(1024, 1, 1), "hunter22").unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_eq!(
            verify(&params(1024, 1, 1), "hunter22", &hash),
            Ok(Verification::Match { stale: false })
        );
    }

    #[test]
    fn two_hashes_of_one_password_differ_by_salt() {
        let a = hash(&params(1024, 1, 1), "hunter22").unwrap();
        let b = hash(&params(1024, 1, 1), "hunter22").unwrap();
        assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn each_weaker_dimension_makes_a_match_stale() {
        let configured = params(2048, 2, 2);
        let cases = [
            (
                Algorithm::Argon2id,
                Version::V0x13,
                params(2048, 2, 2),
                false,
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                params(4096, 3, 3),
                false,
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                params(1024, 2, 2),
                true,
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                params(2048, 1, 2),
                true,
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                params(2048, 2, 1),
                true,
            ),
            (
                Algorithm::Argon2id,
                Version::V0x10,
                params(2048, 2, 2),
                true,
            ),
            (Algorithm::Argon2i, Version::V0x13, params(2048, 2, 2), true),
            (Algorithm::Argon2d, Version::V0x13, params(2048, 2, 2), true),
        ];
        for (algorithm, version, stored_params, stale) in cases {
            let label = format!("{algorithm} v{version:?} {stored_params:?}");
            let stored = phc(algorithm, version, stored_params, "hunter22");
            assert_eq!(
                verify(&configured, "hunter22", &stored),
                Ok(Verification::Match { stale }),
                "{label}"
            );
            assert_eq!(
                verify(&configured, "hunter23", &stored),
                Ok(Verification::Mismatch),
                "{label}"
            );
        }
    }

    #[test]
    fn a_shorter_output_is_stale() {
        let short = Params::new(1024, 1, 1, Some(16)).unwrap();
        let stored = phc(Algorithm::Argon2id, Version::V0x13, short, "hunter22");
        assert_eq!(
            verify(&params(1024, 1, 1), "hunter22", &stored),
            Ok(Verification::Match { stale: true })
        );
    }

    #[test]
    fn a_hash_without_version_is_read_as_0x10_and_stale() {
        let stored = phc(
            Algorithm::Argon2id,
            Version::V0x10,
            params(1024, 1, 1),
            "hunter22",
        );
        let unversioned = stored.as_str().replacen("$v=16", "", 1);
        assert_ne!(unversioned, stored.as_str());
        let unversioned = PasswordHash::from_phc(unversioned).unwrap();
        assert_eq!(
            verify(&params(1024, 1, 1), "hunter22", &unversioned),
            Ok(Verification::Match { stale: true })
        );
    }

    #[test]
    fn hashes_that_cannot_be_checked_fail_rather_than_mismatch() {
        let good = hash(&params(1024, 1, 1), "hunter22").unwrap();
        let without_output = good.as_str().rsplit_once('$').unwrap().0.to_owned();
        for bad in [
            "$garbage".to_owned(),
            "$argon2id$v=19$m=1024,t=1,p=1$!!!$!!!".to_owned(),
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E"
                .to_owned(),
            "$argon2id$v=42$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
            "$argon2id$v=19$m=1024,t=1,p=1,pepper=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
            without_output,
        ] {
            let stored = PasswordHash::from_phc(bad.clone()).unwrap();
            let result = verify(&params(1024, 1, 1), "hunter22", &stored);
            assert!(matches!(result, Err(HashError::Failed(_))), "{bad}: {result:?}");
        }
    }

    #[test]
    fn failure_messages_do_not_repeat_the_stored_hash() {
        let stored = PasswordHash::from_phc(
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        )
        .unwrap();
        let Err(HashError::Failed(message)) = verify(&params(1024, 1, 1), "hunter22", &stored)
        else {
            panic!("expected a failure");
        };
        assert!(!message.contains("c2FsdHNhbHQ"), "{message}");
        assert!(!message.contains("aGFzaGhhc2hoYXNo"), "{message}");
    }
}
