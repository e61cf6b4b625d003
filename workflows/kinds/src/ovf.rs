//! OVF descriptors and manifests, pure: what an OVA or OVF says about its virtual machine (CPUs,
//! memory, firmware, disks with their files, capacities and buses, NICs with their networks) and
//! which digests its manifest lists. No I/O: `import-vm` reads the text through the images port and
//! hands it here.
//!
//! Descriptors are read as exporters write them, not only as DSP0243 says: VMware (vSphere, Workstation:
//! `rasd:` items, `vmw:Config` for the firmware, `ovf:capacityAllocationUnits="byte * 2^30"`),
//! VirtualBox (`/disk/<id>` host resources, `MegaBytes`, capacities in bytes without units, the
//! firmware inside `vbox:Machine`) and OVF 2.x (`StorageItem`/`EthernetPortItem` with `sasd:` and
//! `epasd:` children). Elements and attributes are matched by local name, whatever their prefix or
//! namespace. Every error names the element that is wrong and why.

use serde::{Deserialize, Serialize};

/// A descriptor's virtual machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ovf {
    /// The VirtualSystem's `Name`, else its `ovf:id`.
    pub name: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub firmware: Firmware,
    /// The disks the virtual hardware attaches, in its order.
    pub disks: Vec<OvfDisk>,
    pub nics: Vec<OvfNic>,
    /// The NetworkSection's network names.
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Efi,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OvfDisk {
    /// The Disk's `ovf:diskId`.
    pub id: String,
    /// The `ovf:href` of the File it is read from: a member of the OVA, or a file beside the OVF.
    pub file: String,
    /// The File's `ovf:size`, when given.
    pub file_size: Option<u64>,
    /// The disk's size as the guest sees it.
    pub capacity_bytes: u64,
    /// qemu's name for the file's format (`vmdk`, `qcow2`, `vpc`, `vhdx`, `raw`), from the Disk's
    /// `ovf:format` URI; None when it is absent or names no format this importer knows.
    pub format: Option<String>,
    /// The `ovf:format` URI as written (VMware's ends `#streamOptimized`).
    pub format_uri: Option<String>,
    /// The controller the disk hangs off, when the descriptor says.
    pub controller: Option<Controller>,
}

/// A disk controller's kind, from its Item's ResourceType (5 IDE, 6 SCSI, 20 other: SATA, NVMe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Ide,
    Scsi,
    Sata,
    Nvme,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OvfNic {
    /// The Item's `ElementName` (`Network adapter 1`).
    pub name: String,
    /// Its `Connection`: the network it is on (empty when it names none).
    pub network: String,
    /// Its `ResourceSubType` as written (`E1000`, `VmxNet3`, `virtio`; empty when absent).
    pub model: String,
}

/// One line of a manifest (`SHA256(disk1.vmdk)= ab12...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// `sha1`, `sha256` or `sha512`.
    pub algorithm: String,
    pub file: String,
    /// The digest in lowercase hex.
    pub hex: String,
}

/// What is wrong with a descriptor or manifest, naming the element or line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfError(pub String);

impl std::fmt::Display for OvfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OvfError {}

/// Reads an OVF descriptor.
pub fn parse(xml: &str) -> Result<Ovf, OvfError> {
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| err(format!("the descriptor is not well-formed XML: {e}")))?;
    let envelope = doc.root_element();
    if envelope.tag_name().name() != "Envelope" {
        return Err(err(format!(
            "the root element is <{}>, not an OVF Envelope",
            envelope.tag_name().name()
        )));
    }
    let files = references(envelope)?;
    let disks = disk_section(envelope, &files)?;
    let networks: Vec<String> = sections(envelope, "NetworkSection")
        .flat_map(|s| s.children().filter(|n| is(*n, "Network")))
        .filter_map(|n| attr(n, "name").map(str::to_string))
        .collect();

    let systems: Vec<Node> = envelope
        .descendants()
        .filter(|n| is(*n, "VirtualSystem"))
        .collect();
    let system = match systems.as_slice() {
        [] => {
            return Err(err(
                "the descriptor has no VirtualSystem: it describes no virtual machine",
            ));
        }
        [one] => *one,
        many => {
            let ids: Vec<&str> = many.iter().map(|s| attr(*s, "id").unwrap_or("?")).collect();
            return Err(err(format!(
                "the descriptor has {} VirtualSystems ({}); this importer takes one virtual \
                 machine per package",
                many.len(),
                ids.join(", ")
            )));
        }
    };
    let name = system
        .children()
        .find(|n| is(*n, "Name"))
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or_else(|| attr(system, "id"))
        .unwrap_or_default()
        .to_string();
    let hardware = sections(system, "VirtualHardwareSection")
        .next()
        .ok_or_else(|| err("the VirtualSystem has no VirtualHardwareSection"))?;

    let items: Vec<Item> = hardware
        .children()
        .filter(|n| is(*n, "Item") || is(*n, "StorageItem") || is(*n, "EthernetPortItem"))
        .map(Item::read)
        .collect::<Result<_, _>>()?;

    let mut cpus = None;
    let mut memory_bytes = None;
    let mut attached = Vec::new();
    let mut nics = Vec::new();
    for item in &items {
        match item.resource_type {
            3 if cpus.is_none() => {
                let n = item.quantity()?;
                let n = u32::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| item.error(format!("VirtualQuantity {n} is not a CPU count")))?;
                cpus = Some(n);
            }
            4 if memory_bytes.is_none() => {
                let n = item.quantity()?;
                // Memory without units is in MB: a VM of 2048 bytes is not what anyone exported.
                let units = item.get("AllocationUnits").unwrap_or("byte * 2^20");
                let scale = unit(units).ok_or_else(|| {
                    err(format!(
                        "Memory: AllocationUnits \"{units}\" is not a unit this importer knows \
                         ({KNOWN_UNITS})"
                    ))
                })?;
                let bytes = n.checked_mul(scale).filter(|b| *b > 0).ok_or_else(|| {
                    err(format!("Memory: {n} × \"{units}\" is not a memory size"))
                })?;
                memory_bytes = Some(bytes);
            }
            10 => nics.push(OvfNic {
                name: item.label(),
                network: item.get("Connection").unwrap_or_default().to_string(),
                model: item.get("ResourceSubType").unwrap_or_default().to_string(),
            }),
            17 => {
                let host = item
                    .get("HostResource")
                    .ok_or_else(|| item.error("it has no HostResource naming its disk"))?;
                let id = host
                    .strip_prefix("ovf:/disk/")
                    .or_else(|| host.strip_prefix("/disk/"))
                    .ok_or_else(|| {
                        item.error(format!(
                            "HostResource {host} is not ovf:/disk/<id> (a Disk in DiskSection)"
                        ))
                    })?;
                let disk = disks.iter().find(|d| d.id == id).ok_or_else(|| {
                    item.error(format!("HostResource {host} names no Disk in DiskSection"))
                })?;
                if attached.iter().any(|d: &OvfDisk| d.id == disk.id) {
                    continue;
                }
                let controller = item
                    .get("Parent")
                    .and_then(|p| items.iter().find(|c| c.instance_id.as_deref() == Some(p)))
                    .and_then(Item::controller);
                attached.push(OvfDisk {
                    controller,
                    ..disk.clone()
                });
            }
            _ => {}
        }
    }
    Ok(Ovf {
        name,
        cpus: cpus.ok_or_else(|| err("VirtualHardwareSection has no CPU Item (ResourceType 3)"))?,
        memory_bytes: memory_bytes
            .ok_or_else(|| err("VirtualHardwareSection has no memory Item (ResourceType 4)"))?,
        firmware: firmware(system),
        disks: attached,
        nics,
        networks,
    })
}

/// Reads a manifest: one `ALGORITHM(file)= hex` per line (blank lines skipped).
pub fn parse_manifest(text: &str) -> Result<Vec<ManifestEntry>, OvfError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| err(format!("line {}: {why}: {line:?}", i + 1));
        let (left, hex) = line
            .rsplit_once('=')
            .ok_or_else(|| bad("not ALGORITHM(file)= digest"))?;
        let (algorithm, file) = left
            .trim_end()
            .strip_suffix(')')
            .and_then(|l| l.split_once('('))
            .ok_or_else(|| bad("not ALGORITHM(file)= digest"))?;
        let (algorithm, len) = match algorithm.trim().to_ascii_lowercase().as_str() {
            "sha1" => ("sha1", 40),
            "sha256" => ("sha256", 64),
            "sha512" => ("sha512", 128),
            _ => {
                return Err(err(format!(
                    "line {}: unknown digest algorithm {:?} (SHA1, SHA256 and SHA512 are known)",
                    i + 1,
                    algorithm.trim()
                )));
            }
        };
        let hex = hex.trim();
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(&format!(
                "the {} digest is not {len} hex digits",
                algorithm.to_uppercase()
            )));
        }
        let file = file.trim();
        if file.is_empty() {
            return Err(bad("no file name"));
        }
        out.push(ManifestEntry {
            algorithm: algorithm.to_string(),
            file: file.to_string(),
            hex: hex.to_ascii_lowercase(),
        });
    }
    Ok(out)
}

/// The units [`unit`] knows, for error messages.
const KNOWN_UNITS: &str = "byte, byte * 2^10, byte * 2^20, byte * 2^30, byte * 2^40, KB, MB, GB, \
                           TB, KiloBytes, MegaBytes, GigaBytes, TeraBytes";

/// Bytes per unit of a capacity or memory quantity: DMTF's programmatic units (`byte * 2^30`) and
/// the names exporters write instead (`MB`, `MegaBytes`: binary, as every exporter means them).
fn unit(units: &str) -> Option<u64> {
    let u: String = units
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let pow2 = |n: u32| (n <= 62).then(|| 1u64 << n);
    match u.as_str() {
        "byte" | "bytes" => Some(1),
        "kb" | "kib" | "kilobyte" | "kilobytes" => pow2(10),
        "mb" | "mib" | "megabyte" | "megabytes" => pow2(20),
        "gb" | "gib" | "gigabyte" | "gigabytes" => pow2(30),
        "tb" | "tib" | "terabyte" | "terabytes" => pow2(40),
        _ => {
            let rest = u
                .strip_prefix("bytes*")
                .or_else(|| u.strip_prefix("byte*"))?;
            if let Some(n) = rest.strip_prefix("2^") {
                return pow2(n.parse().ok()?);
            }
            let n: u32 = rest.strip_prefix("10^")?.parse().ok()?;
            10u64.checked_pow(n)
        }
    }
}

type Node<'a, 'i> = roxmltree::Node<'a, 'i>;

fn err(message: impl Into<String>) -> OvfError {
    OvfError(message.into())
}

/// Whether `n` is an element of local name `name`.
fn is(n: Node, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name
}

/// An attribute by local name (`ovf:capacity`, or `capacity` unprefixed).
fn attr<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    n.attributes().find(|a| a.name() == name).map(|a| a.value())
}

/// The child sections of `parent` called `name`, also in OVF 0.9's form
/// (`<Section xsi:type="ovf:DiskSection_Type">`).
fn sections<'a, 'i>(parent: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    parent.children().filter(move |n| {
        is(*n, name)
            || (is(*n, "Section")
                && attr(*n, "type").is_some_and(|t| {
                    let t = t.rsplit(':').next().unwrap_or(t);
                    t.strip_suffix("_Type") == Some(name)
                }))
    })
}

/// A File of References: its id, href and size.
struct File {
    id: String,
    href: String,
    size: Option<u64>,
}

fn references(envelope: Node) -> Result<Vec<File>, OvfError> {
    let mut files = Vec::new();
    for refs in envelope.children().filter(|n| is(*n, "References")) {
        for f in refs.children().filter(|n| is(*n, "File")) {
            let id = attr(f, "id")
                .ok_or_else(|| err("References: a File has no ovf:id"))?
                .to_string();
            let href = attr(f, "href")
                .ok_or_else(|| err(format!("File {id}: it has no ovf:href")))?
                .to_string();
            let size = attr(f, "size")
                .map(|s| {
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| err(format!("File {id}: ovf:size \"{s}\" is not a number")))
                })
                .transpose()?;
            files.push(File { id, href, size });
        }
    }
    Ok(files)
}

fn disk_section(envelope: Node, files: &[File]) -> Result<Vec<OvfDisk>, OvfError> {
    let mut disks = Vec::new();
    for section in sections(envelope, "DiskSection") {
        for d in section.children().filter(|n| is(*n, "Disk")) {
            let id = attr(d, "diskId")
                .ok_or_else(|| err("DiskSection: a Disk has no ovf:diskId"))?
                .to_string();
            let capacity = attr(d, "capacity")
                .ok_or_else(|| err(format!("Disk {id}: it has no ovf:capacity")))?;
            let quantity: u64 = capacity.trim().parse().map_err(|_| {
                err(format!(
                    "Disk {id}: ovf:capacity \"{capacity}\" is not a number"
                ))
            })?;
            let units = attr(d, "capacityAllocationUnits").unwrap_or("byte");
            let scale = unit(units).ok_or_else(|| {
                err(format!(
                    "Disk {id}: ovf:capacityAllocationUnits \"{units}\" is not a unit this \
                     importer knows ({KNOWN_UNITS})"
                ))
            })?;
            let capacity_bytes = quantity
                .checked_mul(scale)
                .ok_or_else(|| err(format!("Disk {id}: {quantity} × \"{units}\" is too large")))?;
            let file_ref = attr(d, "fileRef").ok_or_else(|| {
                err(format!(
                    "Disk {id}: it has no ovf:fileRef (an empty disk); this importer takes disks \
                     with contents"
                ))
            })?;
            let file = files.iter().find(|f| f.id == file_ref).ok_or_else(|| {
                err(format!(
                    "Disk {id}: ovf:fileRef \"{file_ref}\" names no File in References"
                ))
            })?;
            let format_uri = attr(d, "format").map(str::to_string);
            disks.push(OvfDisk {
                id,
                file: file.href.clone(),
                file_size: file.size,
                capacity_bytes,
                format: format_uri.as_deref().and_then(format_of),
                format_uri,
                controller: None,
            });
        }
    }
    Ok(disks)
}

/// qemu's format name for an `ovf:format` URI.
fn format_of(uri: &str) -> Option<String> {
    let u = uri.to_ascii_lowercase();
    let name = if u.contains("vmdk") {
        "vmdk"
    } else if u.contains("qcow2") || u.contains("qcow") {
        "qcow2"
    } else if u.contains("vhdx") {
        "vhdx"
    } else if u.contains("vhd") {
        "vpc"
    } else if u.contains("vdi") || u.contains("virtualbox") {
        "vdi"
    } else if u.contains("raw") {
        "raw"
    } else {
        return None;
    };
    Some(name.to_string())
}

/// A VirtualHardwareSection item with the fields the importer reads.
struct Item<'a, 'i> {
    node: Node<'a, 'i>,
    resource_type: u32,
    instance_id: Option<String>,
}

impl<'a, 'i> Item<'a, 'i> {
    fn read(node: Node<'a, 'i>) -> Result<Item<'a, 'i>, OvfError> {
        let mut item = Item {
            node,
            resource_type: 0,
            instance_id: None,
        };
        item.instance_id = item.get("InstanceID").map(str::to_string);
        let rt = item
            .get("ResourceType")
            .ok_or_else(|| item.error("it has no ResourceType"))?;
        item.resource_type = rt
            .parse()
            .map_err(|_| item.error(format!("ResourceType \"{rt}\" is not a number")))?;
        Ok(item)
    }

    /// A child element's trimmed text, by local name (`rasd:Connection`, `epasd:Connection`, ...).
    fn get(&self, name: &str) -> Option<&'a str> {
        self.node
            .children()
            .find(|n| is(*n, name))
            .and_then(|n| n.text())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// How errors and NICs name it: its ElementName, else its InstanceID.
    fn label(&self) -> String {
        self.get("ElementName")
            .map(str::to_string)
            .or_else(|| self.instance_id.as_ref().map(|i| format!("InstanceID {i}")))
            .unwrap_or_default()
    }

    fn error(&self, why: impl std::fmt::Display) -> OvfError {
        let rt = if self.resource_type == 0 {
            String::new()
        } else {
            format!(" (ResourceType {})", self.resource_type)
        };
        let name = match self.get("ElementName") {
            Some(n) => format!("\"{n}\""),
            None => self.instance_id.as_ref().map_or_else(
                || "without a name".to_string(),
                |i| format!("InstanceID {i}"),
            ),
        };
        err(format!(
            "VirtualHardwareSection {} {name}{rt}: {why}",
            self.node.tag_name().name()
        ))
    }

    fn quantity(&self) -> Result<u64, OvfError> {
        let q = self
            .get("VirtualQuantity")
            .ok_or_else(|| self.error("it has no VirtualQuantity"))?;
        q.parse()
            .map_err(|_| self.error(format!("VirtualQuantity \"{q}\" is not a number")))
    }

    fn controller(&self) -> Option<Controller> {
        let sub = self
            .get("ResourceSubType")
            .unwrap_or_default()
            .to_ascii_lowercase();
        match self.resource_type {
            5 => Some(Controller::Ide),
            6 => Some(Controller::Scsi),
            20 if sub.contains("nvme") => Some(Controller::Nvme),
            20 => Some(Controller::Sata),
            _ => None,
        }
    }
}

/// EFI when VMware's `vmw:Config vmw:key="firmware"` or VirtualBox's `Firmware type` says so.
fn firmware(system: Node) -> Firmware {
    for n in system.descendants().filter(|n| n.is_element()) {
        let efi = match n.tag_name().name() {
            "Config" if attr(n, "key") == Some("firmware") => attr(n, "value"),
            "Firmware" => attr(n, "type"),
            _ => None,
        };
        if efi.is_some_and(|v| v.to_ascii_lowercase().starts_with("efi")) {
            return Firmware::Efi;
        }
    }
    Firmware::Bios
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    /// A vSphere 7 export's descriptor (trimmed of annotations and product sections).
    const VMWARE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by VMware ovftool 4.4.1 (build-16812187), UTC time: 2021-03-04T10:11:12.345Z-->
<Envelope vmw:buildId="build-16812187" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="web-01-disk1.vmdk" ovf:id="file1" ovf:size="1178624000"/>
    <File ovf:href="web-01-disk2.vmdk" ovf:id="file2" ovf:size="68096"/>
    <File ovf:href="web-01-file1.nvram" ovf:id="file3" ovf:size="8684"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="40" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="3191865344"/>
    <Disk ovf:capacity="512" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk2" ovf:fileRef="file2" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="0"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
    <Network ovf:name="backend-vlan20">
      <Description>The backend-vlan20 network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="web-01">
    <Info>A virtual machine</Info>
    <Name>web-01</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="ubuntu64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>web-01</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-17</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>4 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>4</rasd:VirtualQuantity>
        <vmw:CoresPerSocket ovf:required="false">2</vmw:CoresPerSocket>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>8192MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>8192</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>SATA controller 0</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>CD/DVD drive 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:Parent>4</rasd:Parent>
        <rasd:ResourceSubType>vmware.cdrom.remotepassthrough</rasd:ResourceSubType>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="backing.writeThrough" vmw:value="false"/>
      </Item>
      <Item>
        <rasd:AddressOnParent>1</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 2</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:Parent>4</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on &quot;VM Network&quot;</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>8</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="wakeOnLanEnabled" vmw:value="true"/>
      </Item>
      <Item>
        <rasd:AddressOnParent>8</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>backend-vlan20</rasd:Connection>
        <rasd:ElementName>Network adapter 2</rasd:ElementName>
        <rasd:InstanceID>9</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>Video card</rasd:ElementName>
        <rasd:InstanceID>10</rasd:InstanceID>
        <rasd:ResourceType>24</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="videoRamSizeInKB" vmw:value="4096"/>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="false"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="nvram" vmw:value="ovf:/file/file3"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

    /// A VirtualBox 7 export's descriptor, with its vbox:Machine (trimmed).
    const VIRTUALBOX: &str = r#"<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
    <File ovf:id="file1" ovf:href="debian12-disk001.vmdk"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="21474836480" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" vbox:uuid="7d6e4c2b-0a4e-4c7a-9c1e-2b8f3e5d6a71"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="debian12">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description>
      <vbox:OSType ovf:required="false">Debian12_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>debian12</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>2 virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>2048 MB of memory</rasd:Caption>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>ideController0</rasd:Caption>
        <rasd:Description>IDE Controller</rasd:Description>
        <rasd:ElementName>ideController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>Ethernet adapter on 'NAT'</rasd:Caption>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:Caption>disk1</rasd:Caption>
        <rasd:Description>Disk Image</rasd:Description>
        <rasd:ElementName>disk1</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:Parent>5</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:Caption>cdrom1</rasd:Caption>
        <rasd:Description>CD-ROM Drive</rasd:Description>
        <rasd:ElementName>cdrom1</rasd:ElementName>
        <rasd:InstanceID>8</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.19-linux" uuid="{2b8f3e5d-6a71-4c7a-9c1e-7d6e4c2b0a4e}" name="debian12" OSType="Debian12_64">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <Hardware>
        <CPU count="2"/>
        <Memory RAMSize="2048"/>
        <Firmware type="EFI"/>
        <Boot>
          <Order position="1" device="HardDisk"/>
        </Boot>
      </Hardware>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
"#;

    /// An OVF 2.0 descriptor: prefixed envelope, StorageItem and EthernetPortItem.
    const OVF2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData" xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" ovf:version="2.0">
  <ovf:References>
    <ovf:File ovf:id="f-root" ovf:href="db-root.qcow2" ovf:size="734003200"/>
  </ovf:References>
  <ovf:DiskSection>
    <ovf:Info>Disks</ovf:Info>
    <ovf:Disk ovf:diskId="root" ovf:fileRef="f-root" ovf:capacity="20" ovf:capacityAllocationUnits="GigaBytes" ovf:format="http://www.gnome.org/~markmc/qcow-image-format.html"/>
  </ovf:DiskSection>
  <ovf:NetworkSection>
    <ovf:Info>Networks</ovf:Info>
    <ovf:Network ovf:name="storage"/>
  </ovf:NetworkSection>
  <ovf:VirtualSystemCollection ovf:id="stack">
    <ovf:Info>One machine</ovf:Info>
    <ovf:VirtualSystem ovf:id="db">
      <ovf:Info>The database</ovf:Info>
      <ovf:VirtualHardwareSection>
        <ovf:Info>Hardware</ovf:Info>
        <ovf:Item>
          <rasd:ElementName>CPUs</rasd:ElementName>
          <rasd:InstanceID>1</rasd:InstanceID>
          <rasd:ResourceType>3</rasd:ResourceType>
          <rasd:VirtualQuantity>8</rasd:VirtualQuantity>
        </ovf:Item>
        <ovf:Item>
          <rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits>
          <rasd:ElementName>Memory</rasd:ElementName>
          <rasd:InstanceID>2</rasd:InstanceID>
          <rasd:ResourceType>4</rasd:ResourceType>
          <rasd:VirtualQuantity>16</rasd:VirtualQuantity>
        </ovf:Item>
        <ovf:Item>
          <rasd:ElementName>NVMe controller</rasd:ElementName>
          <rasd:InstanceID>3</rasd:InstanceID>
          <rasd:ResourceSubType>vmware.nvme.controller</rasd:ResourceSubType>
          <rasd:ResourceType>20</rasd:ResourceType>
        </ovf:Item>
        <ovf:StorageItem>
          <sasd:ElementName>Root disk</sasd:ElementName>
          <sasd:HostResource>ovf:/disk/root</sasd:HostResource>
          <sasd:InstanceID>4</sasd:InstanceID>
          <sasd:Parent>3</sasd:Parent>
          <sasd:ResourceType>17</sasd:ResourceType>
        </ovf:StorageItem>
        <ovf:EthernetPortItem>
          <epasd:Connection>storage</epasd:Connection>
          <epasd:ElementName>eth0</epasd:ElementName>
          <epasd:InstanceID>5</epasd:InstanceID>
          <epasd:ResourceSubType>virtio</epasd:ResourceSubType>
          <epasd:ResourceType>10</epasd:ResourceType>
        </ovf:EthernetPortItem>
      </ovf:VirtualHardwareSection>
    </ovf:VirtualSystem>
  </ovf:VirtualSystemCollection>
</ovf:Envelope>
"#;

    fn vmdk_uri() -> Option<String> {
        Some("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized".into())
    }

    #[test]
    fn exporters_descriptors() {
        let cases = [
            (
                "vmware",
                VMWARE,
                Ovf {
                    name: "web-01".into(),
                    cpus: 4,
                    memory_bytes: 8192 * MIB,
                    firmware: Firmware::Efi,
                    disks: vec![
                        OvfDisk {
                            id: "vmdisk1".into(),
                            file: "web-01-disk1.vmdk".into(),
                            file_size: Some(1_178_624_000),
                            capacity_bytes: 40 * GIB,
                            format: Some("vmdk".into()),
                            format_uri: vmdk_uri(),
                            controller: Some(Controller::Scsi),
                        },
                        OvfDisk {
                            id: "vmdisk2".into(),
                            file: "web-01-disk2.vmdk".into(),
                            file_size: Some(68_096),
                            capacity_bytes: 512 * MIB,
                            format: Some("vmdk".into()),
                            format_uri: vmdk_uri(),
                            controller: Some(Controller::Sata),
                        },
                    ],
                    nics: vec![
                        OvfNic {
                            name: "Network adapter 1".into(),
                            network: "VM Network".into(),
                            model: "VmxNet3".into(),
                        },
                        OvfNic {
                            name: "Network adapter 2".into(),
                            network: "backend-vlan20".into(),
                            model: "E1000".into(),
                        },
                    ],
                    networks: vec!["VM Network".into(), "backend-vlan20".into()],
                },
            ),
            (
                "virtualbox",
                VIRTUALBOX,
                Ovf {
                    name: "debian12".into(),
                    cpus: 2,
                    memory_bytes: 2048 * MIB,
                    firmware: Firmware::Efi,
                    disks: vec![OvfDisk {
                        id: "vmdisk1".into(),
                        file: "debian12-disk001.vmdk".into(),
                        file_size: None,
                        capacity_bytes: 20 * GIB,
                        format: Some("vmdk".into()),
                        format_uri: vmdk_uri(),
                        controller: Some(Controller::Sata),
                    }],
                    nics: vec![OvfNic {
                        name: "Ethernet adapter on 'NAT'".into(),
                        network: "NAT".into(),
                        model: "E1000".into(),
                    }],
                    networks: vec!["NAT".into()],
                },
            ),
            (
                "ovf 2.0",
                OVF2,
                Ovf {
                    name: "db".into(),
                    cpus: 8,
                    memory_bytes: 16 * GIB,
                    firmware: Firmware::Bios,
                    disks: vec![OvfDisk {
                        id: "root".into(),
                        file: "db-root.qcow2".into(),
                        file_size: Some(734_003_200),
                        capacity_bytes: 20 * GIB,
                        format: Some("qcow2".into()),
                        format_uri: Some(
                            "http://www.gnome.org/~markmc/qcow-image-format.html".into(),
                        ),
                        controller: Some(Controller::Nvme),
                    }],
                    nics: vec![OvfNic {
                        name: "eth0".into(),
                        network: "storage".into(),
                        model: "virtio".into(),
                    }],
                    networks: vec!["storage".into()],
                },
            ),
        ];
        for (name, xml, want) in cases {
            assert_eq!(parse(xml), Ok(want), "{name}");
        }
    }

    #[test]
    fn byte_order_mark_and_bios_default() {
        let xml = format!(
            "\u{feff}{}",
            VMWARE.replace("vmw:value=\"efi\"", "vmw:value=\"bios\"")
        );
        let ovf = parse(&xml).unwrap();
        assert_eq!(ovf.firmware, Firmware::Bios);
        let vbox = VIRTUALBOX.replace("<Firmware type=\"EFI\"/>", "<Firmware type=\"BIOS\"/>");
        assert_eq!(parse(&vbox).unwrap().firmware, Firmware::Bios);
    }

    #[test]
    fn units_as_exporters_write_them() {
        let cases = [
            ("byte", Some(1)),
            ("Bytes", Some(1)),
            ("byte * 2^10", Some(1 << 10)),
            ("byte * 2^20", Some(MIB)),
            ("byte*2^30", Some(GIB)),
            ("byte * 2^40", Some(1 << 40)),
            ("byte * 10^3", Some(1000)),
            ("KB", Some(1 << 10)),
            ("MB", Some(MIB)),
            ("MegaBytes", Some(MIB)),
            ("GB", Some(GIB)),
            ("GigaBytes", Some(GIB)),
            ("TeraBytes", Some(1 << 40)),
            ("furlongs", None),
            ("byte * 2^99", None),
            ("byte * 2^x", None),
            ("hertz * 10^6", None),
        ];
        for (units, want) in cases {
            assert_eq!(unit(units), want, "{units}");
        }
    }

    #[test]
    fn capacities_in_every_unit() {
        let disk = |attrs: &str| {
            VIRTUALBOX.replace(
                r#"ovf:capacity="21474836480" ovf:diskId="vmdisk1""#,
                &format!(r#"{attrs} ovf:diskId="vmdisk1""#),
            )
        };
        let cases = [
            (r#"ovf:capacity="21474836480""#, 20 * GIB),
            (
                r#"ovf:capacity="20" ovf:capacityAllocationUnits="byte * 2^30""#,
                20 * GIB,
            ),
            (
                r#"ovf:capacity="20480" ovf:capacityAllocationUnits="byte * 2^20""#,
                20 * GIB,
            ),
            (
                r#"ovf:capacity="4096" ovf:capacityAllocationUnits="byte""#,
                4096,
            ),
            (
                r#"ovf:capacity="300" ovf:capacityAllocationUnits="MegaBytes""#,
                300 * MIB,
            ),
            (
                r#"ovf:capacity="2" ovf:capacityAllocationUnits="GigaBytes""#,
                2 * GIB,
            ),
        ];
        for (attrs, want) in cases {
            let ovf = parse(&disk(attrs)).unwrap_or_else(|e| panic!("{attrs}: {e}"));
            assert_eq!(ovf.disks[0].capacity_bytes, want, "{attrs}");
        }
        let memory = |units: &str| {
            VIRTUALBOX.replace(
                "<rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>",
                units,
            )
        };
        let cases = [
            (
                "<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>",
                2048 * MIB,
            ),
            (
                "<rasd:AllocationUnits>MB</rasd:AllocationUnits>",
                2048 * MIB,
            ),
            (
                "<rasd:AllocationUnits>GB</rasd:AllocationUnits>",
                2048 * GIB,
            ),
            ("", 2048 * MIB),
        ];
        for (units, want) in cases {
            assert_eq!(parse(&memory(units)).unwrap().memory_bytes, want, "{units}");
        }
    }

    #[test]
    fn unprefixed_rasd_and_ovf_0_9_sections() {
        let xml = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References><File id="f1" href="a.vmdk" size="10"/></References>
  <Section xsi:type="ovf:DiskSection_Type"><Disk diskId="d1" fileRef="f1" capacity="1073741824"/></Section>
  <VirtualSystem id="plain">
    <Section xsi:type="ovf:VirtualHardwareSection_Type">
      <Item><ResourceType>3</ResourceType><VirtualQuantity>1</VirtualQuantity></Item>
      <Item><ResourceType>4</ResourceType><AllocationUnits>MB</AllocationUnits><VirtualQuantity>512</VirtualQuantity></Item>
      <Item><ResourceType>17</ResourceType><HostResource>ovf:/disk/d1</HostResource></Item>
    </Section>
  </VirtualSystem>
</Envelope>"#;
        let ovf = parse(xml).unwrap();
        assert_eq!(
            (ovf.name.as_str(), ovf.cpus, ovf.memory_bytes),
            ("plain", 1, 512 * MIB)
        );
        assert_eq!(ovf.disks.len(), 1);
        assert_eq!(ovf.disks[0].file, "a.vmdk");
        assert_eq!(ovf.disks[0].capacity_bytes, GIB);
        assert_eq!(ovf.disks[0].format, None);
        assert_eq!(ovf.disks[0].controller, None);
    }

    #[test]
    fn descriptor_errors_name_the_element() {
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "disk names no Disk",
                VMWARE.replace(
                    "<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>",
                    "<rasd:HostResource>ovf:/disk/vmdisk9</rasd:HostResource>",
                ),
                "VirtualHardwareSection Item \"Hard disk 1\" (ResourceType 17): HostResource \
                 ovf:/disk/vmdisk9 names no Disk in DiskSection",
            ),
            (
                "capacity not a number",
                VMWARE.replace(r#"ovf:capacity="40""#, r#"ovf:capacity="abc""#),
                "Disk vmdisk1: ovf:capacity \"abc\" is not a number",
            ),
            (
                "unknown capacity unit",
                VMWARE.replace(r#""byte * 2^30""#, r#""byte * 2^x""#),
                "Disk vmdisk1: ovf:capacityAllocationUnits \"byte * 2^x\" is not a unit this \
                 importer knows",
            ),
            (
                "unknown memory unit",
                VMWARE.replace(
                    "<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>",
                    "<rasd:AllocationUnits>furlongs</rasd:AllocationUnits>",
                ),
                "Memory: AllocationUnits \"furlongs\" is not a unit this importer knows \
                 (byte, byte * 2^10, byte * 2^20",
            ),
            (
                "file missing from References",
                VMWARE.replace(
                    r#"<File ovf:href="web-01-disk2.vmdk" ovf:id="file2" ovf:size="68096"/>"#,
                    "",
                ),
                "Disk vmdisk2: ovf:fileRef \"file2\" names no File in References",
            ),
            (
                "file size not a number",
                VMWARE.replace(r#"ovf:size="68096""#, r#"ovf:size="68k""#),
                "File file2: ovf:size \"68k\" is not a number",
            ),
            (
                "no VirtualSystem",
                VMWARE
                    .replace("<VirtualSystem ovf:id=\"web-01\">", "<Other>")
                    .replace("</VirtualSystem>", "</Other>"),
                "the descriptor has no VirtualSystem",
            ),
            (
                "two VirtualSystems",
                OVF2.replace(
                    "</ovf:VirtualSystemCollection>",
                    "<ovf:VirtualSystem ovf:id=\"web\"/></ovf:VirtualSystemCollection>",
                ),
                "the descriptor has 2 VirtualSystems (db, web)",
            ),
            (
                "no hardware",
                VIRTUALBOX
                    .replace("<VirtualHardwareSection>", "<Elsewhere>")
                    .replace("</VirtualHardwareSection>", "</Elsewhere>"),
                "the VirtualSystem has no VirtualHardwareSection",
            ),
            (
                "no CPU",
                VMWARE.replace(
                    "<rasd:ResourceType>3</rasd:ResourceType>",
                    "<rasd:ResourceType>1</rasd:ResourceType>",
                ),
                "VirtualHardwareSection has no CPU Item (ResourceType 3)",
            ),
            (
                "no memory",
                VMWARE.replace(
                    "<rasd:ResourceType>4</rasd:ResourceType>",
                    "<rasd:ResourceType>1</rasd:ResourceType>",
                ),
                "VirtualHardwareSection has no memory Item (ResourceType 4)",
            ),
            (
                "CPU count not a number",
                VMWARE.replace(
                    "<rasd:VirtualQuantity>4</rasd:VirtualQuantity>",
                    "<rasd:VirtualQuantity>four</rasd:VirtualQuantity>",
                ),
                "VirtualHardwareSection Item \"4 virtual CPU(s)\" (ResourceType 3): VirtualQuantity \
                 \"four\" is not a number",
            ),
            (
                "zero CPUs",
                VMWARE.replace(
                    "<rasd:VirtualQuantity>4</rasd:VirtualQuantity>",
                    "<rasd:VirtualQuantity>0</rasd:VirtualQuantity>",
                ),
                "VirtualQuantity 0 is not a CPU count",
            ),
            (
                "ResourceType not a number",
                VMWARE.replace(
                    "<rasd:ResourceType>24</rasd:ResourceType>",
                    "<rasd:ResourceType>video</rasd:ResourceType>",
                ),
                "VirtualHardwareSection Item \"Video card\": ResourceType \"video\" is not a number",
            ),
            (
                "disk without HostResource",
                VMWARE.replace(
                    "<rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource>",
                    "",
                ),
                "VirtualHardwareSection Item \"Hard disk 2\" (ResourceType 17): it has no \
                 HostResource naming its disk",
            ),
            (
                "HostResource of a file",
                VMWARE.replace("ovf:/disk/vmdisk2", "ovf:/file/file2"),
                "HostResource ovf:/file/file2 is not ovf:/disk/<id>",
            ),
            (
                "empty disk",
                VMWARE.replace(
                    r#"ovf:diskId="vmdisk2" ovf:fileRef="file2""#,
                    r#"ovf:diskId="vmdisk2""#,
                ),
                "Disk vmdisk2: it has no ovf:fileRef (an empty disk)",
            ),
            (
                "not XML",
                "<Envelope><References>".to_string(),
                "the descriptor is not well-formed XML",
            ),
            (
                "not an envelope",
                "<html><body/></html>".to_string(),
                "the root element is <html>, not an OVF Envelope",
            ),
        ];
        for (name, xml, want) in cases {
            let e = parse(&xml).expect_err(name);
            assert!(e.0.contains(want), "{name}: {e}\nwanted: {want}");
        }
    }

    #[test]
    fn manifests() {
        let sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let sha512 = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
        let text = format!(
            "SHA256(web-01.ovf)= {sha256}\r\n\
             SHA1 (web-01-disk1.vmdk)= {}\n\
             \n\
             sha512( disk (2).vmdk ) = {sha512}\n\
             SHA256(web-01-file1.nvram)={sha256}",
            sha1.to_uppercase()
        );
        let entry = |algorithm: &str, file: &str, hex: &str| ManifestEntry {
            algorithm: algorithm.into(),
            file: file.into(),
            hex: hex.into(),
        };
        assert_eq!(
            parse_manifest(&text),
            Ok(vec![
                entry("sha256", "web-01.ovf", sha256),
                entry("sha1", "web-01-disk1.vmdk", sha1),
                entry("sha512", "disk (2).vmdk", sha512),
                entry("sha256", "web-01-file1.nvram", sha256),
            ])
        );
        assert_eq!(parse_manifest(""), Ok(vec![]));

        let cases = [
            (
                format!("SHA256(a.ovf)= {sha256}\nMD5(a.vmdk)= 900150983cd24fb0d6963f7d28e17f72"),
                "line 2: unknown digest algorithm \"MD5\"",
            ),
            (
                "SHA256 a.vmdk abc".to_string(),
                "line 1: not ALGORITHM(file)= digest",
            ),
            (
                format!("SHA256(a.vmdk {sha256}"),
                "line 1: not ALGORITHM(file)= digest",
            ),
            (
                "\n\nSHA1(a.vmdk)= abc".to_string(),
                "line 3: the SHA1 digest is not 40 hex digits",
            ),
            (
                format!("SHA1(a.vmdk)= {sha256}"),
                "line 1: the SHA1 digest is not 40 hex digits",
            ),
            (
                format!("SHA256(a.vmdk)= {}", sha256.replace('a', "g")),
                "line 1: the SHA256 digest is not 64 hex digits",
            ),
            (format!("SHA256()= {sha256}"), "line 1: no file name"),
        ];
        for (text, want) in cases {
            let e = parse_manifest(&text).expect_err(want);
            assert!(e.0.contains(want), "{text:?}: {e}\nwanted: {want}");
        }
    }
}
