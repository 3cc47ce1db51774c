//! The top layer: the command line, one file per command (its `Args` beside
//! its `run`). A command calls operations and speaks the vocabulary; no
//! command imports another.

mod approve;
mod args;
mod check;
#[cfg(feature = "engine")]
mod deploy;
#[cfg(feature = "engine")]
mod dev;
mod encrypt_secret;
pub mod handover;
#[cfg(feature = "engine")]
mod image;
#[cfg(feature = "engine")]
mod image_check;
mod keygen;
#[cfg(feature = "engine")]
mod logs;
#[cfg(feature = "engine")]
mod manifests;
mod rotate_key;
#[cfg(feature = "engine")]
mod status;
#[cfg(feature = "engine")]
mod undeploy;
mod verify;

use crate::vocab::project::Context;

/// boxcar's commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Keygen(keygen::Args),
    EncryptSecret(encrypt_secret::Args),
    Approve(approve::Args),
    Check(check::Args),
    Verify(verify::Args),
    RotateKey(rotate_key::Args),
    #[cfg(feature = "engine")]
    Image(image::Args),
    #[cfg(feature = "engine")]
    ImageCheck(image_check::Args),
    #[cfg(feature = "engine")]
    Deploy(deploy::Args),
    #[cfg(feature = "engine")]
    Dev(dev::Args),
    #[cfg(feature = "engine")]
    Status(status::Args),
    #[cfg(feature = "engine")]
    Logs(logs::Args),
    #[cfg(feature = "engine")]
    Undeploy(undeploy::Args),
    #[cfg(feature = "engine")]
    Manifests(manifests::Args),
}

impl Command {
    /// Runs the command in `ctx`'s project.
    pub fn run(self, sh: &xshell::Shell, ctx: &mut Context) -> anyhow::Result<()> {
        match self {
            Command::Keygen(args) => keygen::run(ctx, args),
            Command::EncryptSecret(args) => encrypt_secret::run(sh, ctx, args),
            Command::Approve(args) => approve::run(sh, ctx, args),
            Command::Check(args) => check::run(sh, ctx, args),
            Command::Verify(args) => verify::run(ctx, args),
            Command::RotateKey(args) => rotate_key::run(ctx, args),
            #[cfg(feature = "engine")]
            Command::Image(args) => image::run(sh, ctx, args),
            #[cfg(feature = "engine")]
            Command::ImageCheck(args) => image_check::run(ctx, args),
            #[cfg(feature = "engine")]
            Command::Deploy(args) => deploy::run(sh, ctx, args),
            #[cfg(feature = "engine")]
            Command::Dev(args) => dev::run(sh, ctx, args),
            #[cfg(feature = "engine")]
            Command::Status(args) => status::run(ctx, args),
            #[cfg(feature = "engine")]
            Command::Logs(args) => logs::run(ctx, args),
            #[cfg(feature = "engine")]
            Command::Undeploy(args) => undeploy::run(ctx, args),
            #[cfg(feature = "engine")]
            Command::Manifests(args) => manifests::run(sh, ctx, args),
        }
    }
}
