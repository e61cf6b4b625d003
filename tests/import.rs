//! VM imports: the kube adapter's CDI and VM calls against the lab (`import/adapter.rs`), the
//! images port over real qemu-img (`import/images.rs`), and `import-vm` and `migration-plan` end
//! to end on real workers against the lab (`import/e2e.rs`).

mod adapter;
mod crash;
pub mod e2e;
mod images;
mod plan;
