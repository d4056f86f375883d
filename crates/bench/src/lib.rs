//! Registrar's benchmarks: programs that drive the release `registrar` binary and report figures
//! against targets. They are development tools, never part of what ships; each lives under
//! `src/bin/` (`capacity`: `just bench`).
