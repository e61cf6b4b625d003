//! Host networking: a machine's interfaces, a fabric's VLANs, the subnets, and the interface
//! operations that build the VMO host network (`create_bond`, `create_bridge`, `create_vlan` on
//! `nodes/{system_id}/interfaces/`, `link_subnet` on one interface). MAAS allows these only while
//! the machine is New, Ready, Allocated or Broken (409 otherwise). Checking a whole layout before
//! any change is the port's `configure_network`, over these.

use drover_workflows::ports::maas::{
    Interface, LinkMode, MaasError, NewBond, NewBridge, NewLink, NewVlan, Subnet, Vlan,
};

use crate::Client;
use crate::model;
use crate::request::Call;

pub async fn interfaces(c: &Client, system_id: &str) -> Result<Vec<Interface>, MaasError> {
    let call = Call::get(
        format!("list interfaces of machine {system_id}"),
        &["nodes", system_id, "interfaces"],
        None,
    );
    let list: Vec<model::Interface> = c.call(call).await?;
    Ok(list.into_iter().map(Into::into).collect())
}

pub async fn vlans(c: &Client, fabric_id: u64) -> Result<Vec<Vlan>, MaasError> {
    let id = fabric_id.to_string();
    let call = Call::get(
        format!("list VLANs of fabric {fabric_id}"),
        &["fabrics", &id, "vlans"],
        None,
    );
    let list: Vec<model::Vlan> = c.call(call).await?;
    Ok(list.into_iter().map(Into::into).collect())
}

pub async fn subnets(c: &Client) -> Result<Vec<Subnet>, MaasError> {
    let list: Vec<model::Subnet> = c
        .call(Call::get("list subnets", &["subnets"], None))
        .await?;
    Ok(list.into_iter().map(Into::into).collect())
}

fn create(system_id: &str, what: String, op: &'static str) -> Call {
    Call::post(what, &["nodes", system_id, "interfaces"], op)
}

pub async fn create_bond(c: &Client, system_id: &str, b: &NewBond) -> Result<Interface, MaasError> {
    let what = format!("create bond {} on machine {system_id}", b.name);
    let call = create(system_id, what, "create_bond")
        .param("name", &b.name)
        .params("parents", &b.parents)
        .param_opt("bond_mode", b.mode.as_ref())
        .param_opt("mtu", b.mtu)
        .param_opt("bond_lacp_rate", b.lacp_rate.as_ref())
        .param_opt("bond_xmit_hash_policy", b.xmit_hash_policy.as_ref())
        .param_opt("bond_miimon", b.miimon);
    Ok(c.call::<model::Interface>(call).await?.into())
}

pub async fn create_bridge(
    c: &Client,
    system_id: &str,
    b: &NewBridge,
) -> Result<Interface, MaasError> {
    let what = format!("create bridge {} on machine {system_id}", b.name);
    let call = create(system_id, what, "create_bridge")
        .param("name", &b.name)
        .param("parents", b.parent)
        .param_opt("bridge_type", b.bridge_type.as_ref())
        .param_opt("bridge_stp", b.stp)
        .param_opt("bridge_fd", b.fd)
        .param_opt("mtu", b.mtu);
    Ok(c.call::<model::Interface>(call).await?.into())
}

pub async fn create_vlan(c: &Client, system_id: &str, v: &NewVlan) -> Result<Interface, MaasError> {
    let what = format!(
        "create VLAN interface (VLAN object {}) on interface {} of machine {system_id}",
        v.vlan, v.parent
    );
    let call = create(system_id, what, "create_vlan")
        .param("vlan", v.vlan)
        .param("parent", v.parent)
        .param_opt("mtu", v.mtu);
    Ok(c.call::<model::Interface>(call).await?.into())
}

pub async fn link_subnet(
    c: &Client,
    system_id: &str,
    interface: u64,
    l: &NewLink,
) -> Result<Interface, MaasError> {
    let iid = interface.to_string();
    let mode = match l.mode {
        LinkMode::Auto => "AUTO",
        LinkMode::Dhcp => "DHCP",
        LinkMode::Static => "STATIC",
        LinkMode::LinkUp => "LINK_UP",
    };
    let call = Call::post(
        format!(
            "link interface {interface} of machine {system_id} to subnet {}",
            l.subnet
        ),
        &["nodes", system_id, "interfaces", &iid],
        "link_subnet",
    )
    .param("mode", mode)
    .param("subnet", l.subnet)
    .param_opt("ip_address", l.ip_address.as_ref())
    .flag("default_gateway", l.default_gateway);
    Ok(c.call::<model::Interface>(call).await?.into())
}
