//! Run by the toolkit's own tests, in a process of its own: starts a private PostgreSQL cluster,
//! prints where it is, and exits failing without dropping it, as a test process that dies would.
//! The test then checks that the cluster went away with the process.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the cluster's whereabouts are this program's answer"
)]

use std::{
    net::{Ipv4Addr, TcpListener},
    process::ExitCode,
};

use registrar_testing::postgres::Discovery;

fn main() -> ExitCode {
    // A loopback address nothing listens on, so the finder starts a private cluster.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr());
    let Ok(default_address) = closed else {
        eprintln!("abandon-cluster: no free loopback port");
        return ExitCode::FAILURE;
    };
    let finder = Discovery {
        configured: None,
        default_address,
        ..Discovery::from_environment()
    };
    match finder.run() {
        Ok(server) => {
            let server = Box::leak(Box::new(server));
            if let Some(cluster) = server.cluster() {
                println!(
                    "cluster {} {}",
                    cluster.folder().display(),
                    cluster.address()
                );
            }
            // Exit without running any destructor: only the watchdog can clean up now.
            std::process::exit(1)
        }
        Err(error) => {
            eprintln!("abandon-cluster: {error}");
            ExitCode::FAILURE
        }
    }
}
