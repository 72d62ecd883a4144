//! The runner flags `reconcile` and `render` share: the image, the pod
//! template and the runner contract, and how they become a [`RunnerConfig`].

use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::lifecycle::template;
use crate::lifecycle::world::RunnerConfig;
use crate::quantity;

#[derive(clap::Args, Clone, Debug)]
pub struct RunnerArgs {
    /// The runner image, for a runner container whose template names none.
    #[arg(
        long,
        env = "AGENTIC_RUNNER_IMAGE",
        default_value = "quay.io/ambient_code/vteam_claude_runner:latest"
    )]
    pub runner_image: String,
    /// The runner pod's shape: a PodTemplateSpec (YAML or JSON), a Pod, a
    /// PodTemplate, or a ConfigMap holding one. The reconciler fills in what
    /// the runner contract asks and what it owns; the rest is kept. Reloaded
    /// when the file changes; a bad reload keeps the last good template.
    #[arg(long, env = "AGENTIC_RUNNER_POD_TEMPLATE")]
    pub runner_pod_template: Option<PathBuf>,
    /// The runner contract (what the runner expects of its pod and of
    /// notices, docs/operations.md): a file, or a ConfigMap holding one under
    /// `runner-contract.yaml`. Default: the one in the template's ConfigMap
    /// if it has one, else the shipped ambient-code runner's. Reloaded with
    /// the template.
    #[arg(long, env = "AGENTIC_RUNNER_CONTRACT")]
    pub runner_contract: Option<PathBuf>,
    /// Refuse a template whose pod breaks the restricted Pod Security Standard.
    #[arg(long, env = "AGENTIC_REQUIRE_RESTRICTED")]
    pub require_restricted: bool,
    /// CPU request of the runner container when the template sets none.
    #[arg(long, default_value = "1", value_parser = quantity::positive_flag)]
    pub runner_cpu: Quantity,
    /// Memory request and limit of the runner container when the template
    /// sets neither.
    #[arg(long, default_value = "4Gi", value_parser = quantity::positive_flag)]
    pub runner_memory: Quantity,
}

fn text(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| anyhow::anyhow!("{}: not UTF-8", path.display()))
}

impl RunnerArgs {
    fn base(&self) -> RunnerConfig {
        RunnerConfig {
            image: self.runner_image.clone(),
            cpu: Some(self.runner_cpu.clone()),
            memory: Some(self.runner_memory.clone()),
            ..RunnerConfig::default()
        }
    }

    /// The files the runner config comes from, in [`RunnerArgs::config`] order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.runner_pod_template
            .iter()
            .chain(self.runner_contract.iter())
            .cloned()
            .collect()
    }

    /// The runner config from the contents of [`RunnerArgs::files`].
    pub fn config(&self, files: &[PathBuf], contents: &[Vec<u8>]) -> anyhow::Result<RunnerConfig> {
        let mut texts = files.iter().zip(contents).map(|(p, b)| text(p, b));
        let template = match &self.runner_pod_template {
            Some(_) => texts.next().transpose()?,
            None => None,
        };
        let contract = match &self.runner_contract {
            Some(_) => texts.next().transpose()?,
            None => None,
        };
        let names = files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        template::load_pair(
            template.as_deref(),
            contract.as_deref(),
            &self.base(),
            self.require_restricted,
        )
        .with_context(|| format!("runner pod template and contract ({names})"))
    }

    /// Read the files now.
    pub fn load(&self) -> anyhow::Result<RunnerConfig> {
        let files = self.files();
        let contents = files
            .iter()
            .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.config(&files, &contents)
    }
}
