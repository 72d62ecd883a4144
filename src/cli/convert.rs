//! `agentic-webhook convert`: the `/convert` rules, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use crate::api::Version;
use crate::conversion::normalize_object;

use super::input::{read_documents, to_yaml_stream};

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Files (YAML or JSON; several documents and Lists allowed); `-` is stdin.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Version to convert to. Objects already in it are normalized (legacy
    /// shapes stored under its label are rewritten).
    #[arg(long, value_parser = ["v1alpha1", "v1alpha2"])]
    to: String,
}

pub fn run(args: &ConvertArgs) -> anyhow::Result<ExitCode> {
    let to = Version::from_version(&args.to).context("--to must be v1alpha1 or v1alpha2")?;
    let mut out = Vec::new();
    for file in &args.files {
        for doc in read_documents(file)? {
            let converted = normalize_object(&doc.object.to_string(), to)
                .with_context(|| format!("{}: cannot convert", doc.origin))?;
            let value: Value = serde_json::from_slice(&converted)
                .with_context(|| format!("{}: converted object is not JSON", doc.origin))?;
            if value["metadata"]["annotations"]
                .get(crate::api::annotations::CONVERSION_DATA)
                .is_some()
            {
                // V18 refuses anyone else adding or changing it: applying
                // this output as a user fails with a Forbidden.
                eprintln!(
                    "Warning: {}: the output carries the {} annotation (what {} cannot hold, kept for the way back); \
                     only controller principals (serve --controller-user/--controller-group) may apply an object with it (V18). \
                     Apply the object in its original version instead, or as the controller.",
                    doc.origin,
                    crate::api::annotations::CONVERSION_DATA,
                    args.to
                );
            }
            out.push(value);
        }
    }
    print!("{}", to_yaml_stream(&out)?);
    Ok(ExitCode::SUCCESS)
}
