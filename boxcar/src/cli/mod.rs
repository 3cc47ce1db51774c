//! The top layer: the command line, one file per command (its `Args` beside
//! its `run`). A command calls operations and speaks the vocabulary; no
//! command imports another.

mod approve;
mod args;
mod check;
mod deploy;
mod dev;
mod encrypt_secret;
mod image;
mod image_check;
mod keygen;
mod logs;
mod manifests;
mod rotate_key;
mod status;
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
    Image(image::Args),
    ImageCheck(image_check::Args),
    Deploy(deploy::Args),
    Dev(dev::Args),
    Status(status::Args),
    Logs(logs::Args),
    Undeploy(undeploy::Args),
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
            Command::Image(args) => image::run(sh, ctx, args),
            Command::ImageCheck(args) => image_check::run(ctx, args),
            Command::Deploy(args) => deploy::run(sh, ctx, args),
            Command::Dev(args) => dev::run(sh, ctx, args),
            Command::Status(args) => status::run(ctx, args),
            Command::Logs(args) => logs::run(ctx, args),
            Command::Undeploy(args) => undeploy::run(ctx, args),
            Command::Manifests(args) => manifests::run(sh, ctx, args),
        }
    }
}
