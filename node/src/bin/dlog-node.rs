//! `dlog-node <node.toml>`: runs one DLog node (what `dlog node run --config` will call).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: dlog-node <node.toml>");
        return ExitCode::from(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .init();
    let rt = match dlog_node::runtime(&path) {
        Ok(rt) => rt,
        Err(e @ dlog_node::NodeError::Config { .. }) => {
            eprintln!("dlog-node: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("dlog-node: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dlog_node::run(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ dlog_node::NodeError::Config { .. }) => {
            eprintln!("dlog-node: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("dlog-node: {e}");
            ExitCode::from(1)
        }
    }
}
