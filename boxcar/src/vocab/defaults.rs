//! The one place that holds boxcar's default values: what a service gets for
//! every field its contract leaves out, and the deploy defaults.
//!
//! Nothing else in the library may name a port, a user id or a path of a
//! particular service: everything else reads the contract (a tidy test keeps
//! it so).

/// Port a service listens on when its contract names none (Cloud Run's and
/// most frameworks' default).
pub const PORT: u16 = 8080;
/// Numeric user and group the service runs as: distroless's `nonroot`.
pub const USER: u32 = 65532;
/// Folder of a service's environment files, relative to the workspace root
/// (the secrets library's default, which a service opens when it runs from
/// a checkout).
pub const CONFIG_DIR: &str = boxcar_secrets::DEFAULT_CONFIG_DIR;
/// Size budget of an image (all layers, uncompressed), in KiB.
pub const SIZE_BUDGET_KIB: usize = 32 * 1024;
/// Memory limit of a deployed container or task, in MiB.
pub const MEMORY_MIB: u64 = 256;
/// Process and thread limit of a deployed container or task.
pub const PIDS: i64 = 256;
/// Ports a Kubernetes NetworkPolicy lets the service reach (besides DNS):
/// HTTPS, since the credentials boxcar ships are for calling APIs.
pub const EGRESS_PORTS: &[u16] = &[443];
/// Storage a Kubernetes PersistentVolumeClaim asks for when a service keeps data.
pub const STORAGE: &str = "1Gi";
