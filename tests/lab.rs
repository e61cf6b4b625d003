//! Conformance of the lab with clients nobody here wrote: kubectl, the Python `kubernetes` client
//! and python-libmaas, plus the apiserver and MAAS error contracts over real HTTP. Every test
//! starts its own lab on 127.0.0.1:0; missing clients fail the test with the command to install them.

mod api;
mod cdi;
mod kube_rs;
mod kubectl;
mod libmaas;
mod maas_api;
mod python_kube;
mod sim;
pub(crate) mod support;
mod ticketing;
