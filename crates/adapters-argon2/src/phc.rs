//! The Argon2 work itself, synchronous and CPU-bound: hashing into a PHC string, and checking a
//! password against a stored PHC string with the parameters embedded in it, both in a hashing
//! thread's reusable [`Memory`]. Only pool threads call these.

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{
        self,
        phc::{self, Output, ParamsString, Salt},
    },
};
use registrar_application::ports::{HashError, Verification};
use registrar_domain::PasswordHash;

use crate::failure::Failure;

/// The most memory a stored hash may ask for, in KiB, when it asks for more than the configured
/// `m`: 256 MiB. A larger stored cost is refused rather than allocated.
pub(crate) const MAX_STORED_MEMORY_KIB: u32 = 256 * 1024;

/// The most passes a stored hash may ask for when it asks for more than the configured `t`: a
/// larger one would hold a hashing thread for minutes, and is refused rather than computed.
pub(crate) const MAX_STORED_ITERATIONS: u32 = 64;

/// One hashing thread's Argon2 working memory: a block array of the configured size, allocated
/// on the thread's first job and reused by every later one, so that a thread holds one array
/// rather than leaving one freed array per job to the allocator.
///
/// Argon2 writes every block before reading it, so what a job leaves behind cannot change the
/// next job's result.
pub(crate) struct Memory {
    /// Empty until the first job, then exactly `kept` blocks.
    blocks: Vec<Block>,
    /// Blocks the configured parameters need: what the thread keeps between jobs.
    kept: usize,
    /// The most blocks a stored hash may need.
    limit: usize,
}

impl Memory {
    /// Memory for hashing with `configured`; nothing is allocated until the first job.
    pub(crate) fn new(configured: &Params) -> Self {
        let kept = configured.block_count();
        // KiB and blocks are the same unit: a block is 1 KiB.
        let limit = usize::try_from(MAX_STORED_MEMORY_KIB).map_or(usize::MAX, |max| max.max(kept));
        Self {
            blocks: Vec::new(),
            kept,
            limit,
        }
    }

    /// Blocks currently held by the thread: zero before its first job, then the configured size.
    #[cfg(test)]
    pub(crate) fn held_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Runs `work` with exactly `count` blocks: a prefix of the kept array when it fits, or,
    /// for a stored hash stronger than configured, an array allocated for this job only and
    /// freed after it, so one odd hash does not leave the thread holding more. The blocks are
    /// zeroed afterwards when `wipe` says so.
    fn with_blocks<T>(
        &mut self,
        count: usize,
        wipe: bool,
        work: impl FnOnce(&mut [Block]) -> T,
    ) -> Result<T, HashError> {
        if count > self.kept {
            let mut temporary = allocate(count)?;
            let blocks = Wiped(&mut temporary, wipe);
            return Ok(work(&mut *blocks.0));
        }
        if self.blocks.is_empty() {
            self.blocks = allocate(self.kept)?;
        }
        let blocks = Wiped(
            self.blocks
                .get_mut(..count)
                .ok_or(Failure::MemoryTooSmall)?,
            wipe,
        );
        Ok(work(&mut *blocks.0))
    }
}

/// Blocks zeroed when dropped, if the flag says so: after the job, or while a panic in it
/// unwinds.
///
/// Why zero although the next job overwrites them: after a single pass (`t = 1`) the blocks
/// early in each lane are a cheap check of password guesses (the first two cost one Blake2b
/// each, block `j` about `j` compressions), skipping Argon2's memory-hard work. After two
/// passes or more, every block left is of the last pass, and checking a guess against any of
/// them needs every earlier pass over the whole memory: at least half the work of checking it
/// against the stored hash itself. Zeroing 19 MiB after every job cost about 5 % of the
/// server's CPU at the default `t = 2`, for no such check left to prevent.
struct Wiped<'a>(&'a mut [Block], bool);

/// Whether the blocks of a job with `passes` passes are zeroed after it (see [`Wiped`]).
fn wiped_after(passes: u32) -> bool {
    passes < 2
}

impl Drop for Wiped<'_> {
    fn drop(&mut self) {
        // A job cut short by a panic may have stopped within its first pass.
        if !self.1 && !std::thread::panicking() {
            return;
        }
        self.0.fill(Block::new());
        // Keeps the compiler from dropping the zeroing as dead before a temporary array is freed.
        std::hint::black_box(&mut *self.0);
    }
}

/// A zeroed array of `count` blocks, or [`Failure::NoMemory`] if the allocator has no room.
fn allocate(count: usize) -> Result<Vec<Block>, Failure> {
    let mut blocks = Vec::new();
    blocks
        .try_reserve_exact(count)
        .map_err(|source| Failure::NoMemory { kib: count, source })?;
    blocks.resize(count, Block::new());
    Ok(blocks)
}

/// Hashes `password` with Argon2id v0x13, `params` and a fresh 16-byte salt from the OS.
pub(crate) fn hash(
    params: &Params,
    password: &str,
    memory: &mut Memory,
) -> Result<PasswordHash, HashError> {
    let bytes =
        password_hash::try_generate_salt().map_err(|error| Failure::Salt(Box::new(error)))?;
    let salt = Salt::new(&bytes).map_err(|error| Failure::Salt(Box::new(error)))?;
    hash_with_salt(params, password, &salt, memory)
}

/// Hashes `password` with Argon2id v0x13, `params` and `salt` into a standard PHC string, the
/// same that `argon2::PasswordHasher::hash_password_with_salt` writes.
fn hash_with_salt(
    params: &Params,
    password: &str,
    salt: &Salt,
    memory: &mut Memory,
) -> Result<PasswordHash, HashError> {
    let failed = |error: password_hash::Error| HashError::from(Failure::Argon2(error));
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = compute(&argon2, password, salt, output_len, memory, failed)?;
    let phc = phc::PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(failed)?,
        salt: Some(*salt),
        hash: Some(output),
    }
    .to_string();
    PasswordHash::from_phc(phc).map_err(|error| Failure::NotPhc(error).into())
}

/// `argon2` of `password` and `salt` into an output of `output_len` bytes, computed in `memory`;
/// Argon2's refusals are reported through `failed`.
fn compute(
    argon2: &Argon2<'_>,
    password: &str,
    salt: &Salt,
    output_len: usize,
    memory: &mut Memory,
    failed: impl Fn(password_hash::Error) -> HashError,
) -> Result<Output, HashError> {
    let mut buffer = [0_u8; Output::MAX_LENGTH];
    let out = buffer
        .get_mut(..output_len)
        .ok_or_else(|| failed(password_hash::Error::OutputSize))?;
    memory
        .with_blocks(
            argon2.params().block_count(),
            wiped_after(argon2.params().t_cost()),
            |blocks| argon2.hash_password_into_with_memory(password.as_bytes(), salt, out, blocks),
        )?
        .map_err(|error| failed(error.into()))?;
    Output::new(out).map_err(|error| failed(error.into()))
}

/// Checks `password` against `stored`, using the algorithm, version and costs written in it.
///
/// A match is `stale` when `stored` is weaker than `configured`: not Argon2id, not version
/// 0x13, any of `m`, `t`, `p` lower, or a shorter output. A stored hash that needs more memory
/// than `memory` allows (the configured `m`, or [`MAX_STORED_MEMORY_KIB`] if larger), or more
/// passes than the configured `t` or [`MAX_STORED_ITERATIONS`], fails uncomputed.
pub(crate) fn verify(
    configured: &Params,
    password: &str,
    stored: &PasswordHash,
    memory: &mut Memory,
) -> Result<Verification, HashError> {
    let parsed = phc::PasswordHash::new(stored.as_str())
        .map_err(|error| Failure::unusable("does not parse", error))?;
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str())
        .map_err(|error| Failure::unusable("is not Argon2", error))?;
    // Argon2 hashes without a version predate version 0x13: the reference implementation reads
    // them as 0x10.
    let version = parsed
        .version
        .map_or(Ok(Version::V0x10), Version::try_from)
        .map_err(|error| Failure::unusable("has an unknown Argon2 version", error))?;
    let params = Params::try_from(&parsed)
        .map_err(|error| Failure::unusable("has invalid parameters", error))?;
    // What Argon2 would use: `m` rounded down to whole blocks per lane and slice.
    if params.block_count() > memory.limit {
        return Err(Failure::TooMuchMemory {
            needs: params.block_count(),
            allowed: memory.limit,
        }
        .into());
    }
    if params.t_cost() > MAX_STORED_ITERATIONS.max(configured.t_cost()) {
        return Err(Failure::TooManyPasses {
            needs: params.t_cost(),
            allowed: MAX_STORED_ITERATIONS.max(configured.t_cost()),
        }
        .into());
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(Failure::Incomplete.into());
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let computed = compute(&argon2, password, &salt, expected.len(), memory, |error| {
        Failure::unusable("cannot be recomputed", error).into()
    })?;
    // `Output`'s equality is constant-time.
    if computed != expected {
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

#[cfg(test)]
mod tests {
    use argon2::PasswordHasher as _;

    use registrar_application::ErrorChain;

    use super::*;

    fn params(m: u32, t: u32, p: u32) -> Params {
        Params::new(m, t, p, None).unwrap()
    }

    /// `hash` in a fresh memory for `params`.
    fn hash(params: &Params, password: &str) -> Result<PasswordHash, HashError> {
        super::hash(params, password, &mut Memory::new(params))
    }

    /// `verify` in a fresh memory for `configured`.
    fn verify(
        configured: &Params,
        password: &str,
        stored: &PasswordHash,
    ) -> Result<Verification, HashError> {
        super::verify(configured, password, stored, &mut Memory::new(configured))
    }

    fn phc(algorithm: Algorithm, version: Version, params: Params, password: &str) -> PasswordHash {
        let phc = Argon2::new(algorithm, version, params)
            .hash_password(password.as_bytes())
            .unwrap()
            .to_string();
        PasswordHash::from_phc(phc).unwrap()
    }

    #[test]
    fn a_hash_carries_its_algorithm_version_and_costs() {
        let hash = hash(&params(1024, 1, 1), "hunter22").unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_eq!(
            verify(&params(1024, 1, 1), "hunter22", &hash).unwrap(),
            Verification::Match { stale: false }
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
                verify(&configured, "hunter22", &stored).unwrap(),
                Verification::Match { stale },
                "{label}"
            );
            assert_eq!(
                verify(&configured, "hunter23", &stored).unwrap(),
                Verification::Mismatch,
                "{label}"
            );
        }
    }

    #[test]
    fn a_shorter_output_is_stale() {
        let short = Params::new(1024, 1, 1, Some(16)).unwrap();
        let stored = phc(Algorithm::Argon2id, Version::V0x13, short, "hunter22");
        assert_eq!(
            verify(&params(1024, 1, 1), "hunter22", &stored).unwrap(),
            Verification::Match { stale: true }
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
            verify(&params(1024, 1, 1), "hunter22", &unversioned).unwrap(),
            Verification::Match { stale: true }
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
    fn a_failure_keeps_what_the_library_said_as_its_source() {
        let stored = PasswordHash::from_phc(
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        )
        .unwrap();
        let error = verify(&params(1024, 1, 1), "hunter22", &stored).unwrap_err();
        let chain = ErrorChain(&error).to_string();
        let (ours, library) = chain
            .split_once(": caused by: the stored password hash has invalid parameters: caused by: ")
            .unwrap_or_else(|| panic!("{chain}"));
        assert_eq!(ours, "password hashing failed");
        assert!(!library.is_empty(), "{chain}");
    }

    #[test]
    fn failure_messages_do_not_repeat_the_stored_hash() {
        let stored = PasswordHash::from_phc(
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        )
        .unwrap();
        let Err(error @ HashError::Failed(_)) = verify(&params(1024, 1, 1), "hunter22", &stored)
        else {
            panic!("expected a failure");
        };
        let message = ErrorChain(&error).to_string();
        assert!(!message.contains("c2FsdHNhbHQ"), "{message}");
        assert!(!message.contains("aGFzaGhhc2hoYXNo"), "{message}");
    }

    #[test]
    fn hashes_in_reused_memory_are_those_of_the_argon2_crate() {
        let configured = params(2048, 2, 2);
        let mut memory = Memory::new(&configured);
        // Fill the memory with another password's blocks first.
        super::hash(&configured, "something else", &mut memory).unwrap();
        for costs in [
            configured.clone(),
            params(1024, 1, 1),
            params(1024, 2, 4),
            params(4096, 3, 1),
            Params::new(2048, 2, 2, Some(64)).unwrap(),
        ] {
            let salt = Salt::generate();
            let ours = hash_with_salt(&costs, "hunter22", &salt, &mut memory).unwrap();
            let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, costs.clone())
                .hash_password_with_salt(b"hunter22", &salt)
                .unwrap()
                .to_string();
            assert_eq!(ours.as_str(), reference, "{costs:?}");
            assert_eq!(memory.held_blocks(), configured.block_count(), "{costs:?}");
        }
    }

    #[test]
    fn blocks_are_wiped_after_a_single_pass_and_left_after_two_or_more() {
        let zeroed = |memory: &Memory| {
            memory
                .blocks
                .iter()
                .all(|block| block.as_ref().iter().all(|word| *word == 0))
        };
        let configured = params(1024, 2, 1);
        let mut memory = Memory::new(&configured);
        super::hash(&configured, "hunter22", &mut memory).unwrap();
        assert!(!zeroed(&memory), "two passes: the last one is left");
        super::hash(&params(1024, 1, 1), "hunter22", &mut memory).unwrap();
        assert!(zeroed(&memory), "one pass: wiped");
    }

    #[test]
    fn hashes_are_those_argon2_0_5_wrote() {
        // From argon2 0.5's `PasswordHasher::hash_password`: an upgrade must not change them.
        let salt = Salt::from_b64("c2FsdHNhbHRzYWx0c2FsdA").unwrap();
        for (costs, expected) in [
            (
                params(19_456, 2, 1),
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$QKHrg5tayLGcN+Y0HVPNaBqykOVLUxlMkZycXE1uWRM",
            ),
            (
                params(1024, 1, 1),
                "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$5Tx9YkNNWfq1gl0Huxrt8T0TE4IsPYoxCIG6y6JJZ6I",
            ),
        ] {
            let mut memory = Memory::new(&costs);
            let ours =
                hash_with_salt(&costs, "correct horse battery staple", &salt, &mut memory).unwrap();
            assert_eq!(ours.as_str(), expected);
        }
    }

    #[test]
    fn memory_is_allocated_by_the_first_job_and_stays_the_configured_size() {
        let configured = params(2048, 2, 1);
        let mut memory = Memory::new(&configured);
        assert_eq!(memory.held_blocks(), 0);
        let weaker = phc(
            Algorithm::Argon2id,
            Version::V0x13,
            params(1024, 1, 1),
            "hunter22",
        );
        let stronger = phc(
            Algorithm::Argon2id,
            Version::V0x13,
            params(8192, 3, 4),
            "hunter22",
        );
        for _ in 0..3 {
            for stored in [&weaker, &stronger] {
                assert!(matches!(
                    super::verify(&configured, "hunter22", stored, &mut memory),
                    Ok(Verification::Match { .. })
                ));
                assert_eq!(
                    super::verify(&configured, "hunter23", stored, &mut memory).unwrap(),
                    Verification::Mismatch
                );
                assert_eq!(memory.held_blocks(), 2048);
                assert!(
                    memory
                        .blocks
                        .iter()
                        .all(|block| block.as_ref().iter().all(|word| *word == 0)),
                    "the memory is zeroed after each job"
                );
            }
        }
    }

    #[test]
    fn a_stored_hash_asking_for_more_passes_than_allowed_fails_uncomputed() {
        let configured = params(1024, 2, 1);
        let mut memory = Memory::new(&configured);
        let stored = |t: u32| {
            PasswordHash::from_phc(format!(
                "$argon2id$v=19$m=1024,t={t},p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNo"
            ))
            .unwrap()
        };

        // u32::MAX passes would take years: an answer at all shows it was not computed.
        let too_many = super::verify(&configured, "hunter22", &stored(u32::MAX), &mut memory);
        let most = super::verify(
            &configured,
            "hunter22",
            &stored(MAX_STORED_ITERATIONS),
            &mut memory,
        );

        assert!(
            matches!(too_many, Err(HashError::Failed(_))),
            "{too_many:?}"
        );
        assert_eq!(most.unwrap(), Verification::Mismatch);
    }

    #[test]
    fn a_stored_hash_needing_more_memory_than_allowed_fails_unallocated() {
        let configured = params(1024, 1, 1);
        let mut memory = Memory::new(&configured);
        for m in [MAX_STORED_MEMORY_KIB + 4, u32::MAX] {
            let stored = PasswordHash::from_phc(format!(
                "$argon2id$v=19$m={m},t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
            ))
            .unwrap();
            let result = super::verify(&configured, "hunter22", &stored, &mut memory);
            assert!(
                matches!(result, Err(HashError::Failed(_))),
                "m={m}: {result:?}"
            );
            assert_eq!(memory.held_blocks(), 0, "m={m}");
        }
    }

    #[test]
    fn a_configured_memory_above_the_stored_limit_raises_the_limit() {
        let configured = params(MAX_STORED_MEMORY_KIB * 2, 1, 1);
        let memory = Memory::new(&configured);
        assert_eq!(memory.limit, configured.block_count());
        assert_eq!(memory.held_blocks(), 0);
    }
}
