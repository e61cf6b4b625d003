//! The images adapter (`drover-images`) against the real `qemu-img`, real tars and real HTTP: images
//! of every format made with `qemu-img create` and written with `qemu-io`, damaged on purpose,
//! converted with progress and compared with `qemu-img compare`; OVAs built with the `tar` binary in
//! its three formats, read, digested (against `sha256sum`) and extracted; downloads, and images
//! behind URLs inspected by their headers (against `qemu-img info` of the local file), from a
//! loopback axum file server that honours Range requests (or, on purpose, does not).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use drover_images::{DEFAULT_QEMU_IMG, LocalImages};
use drover_workflows::ports::images::{ImageError, Images};
use drover_workflows::ports::kube::Transferred;

/// A directory of its own under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "drover-images-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The adapter with its work root inside this directory.
    fn images(&self) -> LocalImages {
        LocalImages::new(self.path("work"), DEFAULT_QEMU_IMG)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a program to success and returns its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 64 MiB image of `format` whose first MiB is 0xab and whose 40th MiB is 0xcd.
fn image(dir: &Scratch, name: &str, format: &str, options: &[&str]) -> PathBuf {
    let path = dir.path(name);
    let has_qemu_io = Command::new("qemu-io").arg("--version").output().is_ok();
    if has_qemu_io {
        let mut args = vec!["create", "-q", "-f", format];
        args.extend(options);
        args.extend([s(&path), "64M"]);
        run("qemu-img", &args);
        for write in ["write -P 0xab 0 1M", "write -P 0xcd 40M 1M"] {
            run("qemu-io", &["-f", format, "-c", write, s(&path)]);
        }
    } else {
        let raw = dir.path(&format!("{name}.raw"));
        let mut data = vec![0u8; 64 << 20];
        data[..1 << 20].fill(0xab);
        data[40 << 20..41 << 20].fill(0xcd);
        std::fs::write(&raw, data).unwrap();
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", format];
        for o in options {
            args.push(o);
        }
        args.extend([s(&raw), s(&path)]);
        run("qemu-img", &args);
    }
    path
}

/// A progress callback that records what it is told.
#[derive(Default)]
struct Seen(Mutex<Vec<Transferred>>);

impl Seen {
    fn all(&self) -> Vec<Transferred> {
        self.0.lock().unwrap().clone()
    }

    fn last(&self) -> Transferred {
        *self
            .0
            .lock()
            .unwrap()
            .last()
            .expect("progress was reported")
    }
}

macro_rules! progress {
    ($seen:expr) => {
        &|t: Transferred| $seen.0.lock().unwrap().push(t)
    };
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).unwrap();
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).unwrap();
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn be_u64(data: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(data[at..at + 8].try_into().unwrap())
}

#[tokio::test]
async fn inspect_reads_every_format() {
    let dir = Scratch::new("formats");
    let images = dir.images();
    let cases = [
        ("a.qcow2", "qcow2", &[][..], "qcow2"),
        ("a.vmdk", "vmdk", &[][..], "vmdk"),
        (
            "so.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"][..],
            "vmdk",
        ),
        ("a.vhd", "vpc", &[][..], "vpc"),
        // A fixed VHD has its footer only at its end, so qemu-img probes it as raw; its name says
        // what it is.
        ("fixed.vhd", "vpc", &["-o", "subformat=fixed"][..], "vpc"),
        ("a.vhdx", "vhdx", &[][..], "vhdx"),
        ("a.img", "raw", &[][..], "raw"),
    ];
    for (name, format, options, want) in cases {
        let path = image(&dir, name, format, options);
        let info = images
            .inspect(s(&path))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.format, want, "{name}");
        // VHD rounds the size up to its CHS geometry.
        assert!(
            (64 << 20..(64 << 20) + (1 << 20)).contains(&info.virtual_size),
            "{name}: {}",
            info.virtual_size
        );
        assert!(info.actual_size.is_some_and(|a| a > 0), "{name}");
        assert_eq!(info.backing_file, None, "{name}");
        assert!(!info.corrupt && !info.encrypted, "{name}");
    }

    // A text file is raw to qemu-img (a whole sector, rounded up); the workflow decides.
    let text = dir.path("notes.txt");
    std::fs::write(&text, "not an image\n").unwrap();
    let info = images.inspect(s(&text)).await.unwrap();
    assert_eq!((info.format.as_str(), info.virtual_size), ("raw", 512));

    let missing = dir.path("nowhere.qcow2");
    assert_eq!(
        images.inspect(s(&missing)).await,
        Err(ImageError::NotFound(format!(
            "no such file: {}",
            missing.display()
        )))
    );
    assert!(matches!(
        images.inspect(s(&dir.0)).await,
        Err(ImageError::Invalid(m)) if m.contains("is a directory")
    ));
}

#[tokio::test]
async fn inspect_reports_a_backing_file() {
    let dir = Scratch::new("backing");
    let images = dir.images();
    let base = image(&dir, "base.qcow2", "qcow2", &[]);
    let over = dir.path("over.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&base),
            "-F",
            "qcow2",
            s(&over),
        ],
    );
    let info = images.inspect(s(&over)).await.unwrap();
    assert_eq!(info.backing_file.as_deref(), Some(s(&base)));
    assert_eq!(info.virtual_size, 64 << 20);
}

#[tokio::test]
async fn inspect_finds_damaged_images() {
    let dir = Scratch::new("damaged");
    let images = dir.images();

    // An L1 entry that points at an unaligned L2 table: qemu-img check counts corruptions.
    let l1 = image(&dir, "l1.qcow2", "qcow2", &[]);
    let data = std::fs::read(&l1).unwrap();
    let l1_offset = be_u64(&data, 40) as usize;
    patch(&l1, l1_offset, &((1u64 << 63) | 0x12_3400).to_be_bytes());
    let info = images.inspect(s(&l1)).await.unwrap();
    assert!(info.corrupt, "{info:?}");

    // The corrupt bit set (as qemu sets it when it meets a corruption at run time).
    let flagged = image(&dir, "flagged.qcow2", "qcow2", &[]);
    let data = std::fs::read(&flagged).unwrap();
    patch(&flagged, 72, &(be_u64(&data, 72) | 2).to_be_bytes());
    assert!(images.inspect(s(&flagged)).await.unwrap().corrupt);

    // A qcow2 cut short: its tables point past its end.
    let cut = image(&dir, "cut.qcow2", "qcow2", &[]);
    truncate(&cut, 100_000);
    assert!(images.inspect(s(&cut)).await.unwrap().corrupt);

    // A header qemu-img refuses outright.
    let version = image(&dir, "version.qcow2", "qcow2", &[]);
    patch(&version, 4, &99u32.to_be_bytes());
    let e = images.inspect(s(&version)).await.unwrap_err();
    assert!(
        matches!(&e, ImageError::Invalid(m) if m.contains("qcow2 version 99") && !m.starts_with("qemu-img")),
        "{e:?}"
    );

    // A qcow2 without its magic probes as raw; its name gives it away.
    let magic = image(&dir, "magic.qcow2", "qcow2", &[]);
    patch(&magic, 0, b"XXXX");
    let e = images.inspect(s(&magic)).await.unwrap_err();
    assert!(
        matches!(&e, ImageError::Invalid(m) if m.contains("named as a qcow2 image") && m.contains("not in qcow2 format")),
        "{e:?}"
    );

    // A vmdk cut short reads as zeros past its end; qemu-img check says so.
    let vmdk = image(&dir, "cut.vmdk", "vmdk", &[]);
    truncate(&vmdk, 300_000);
    let e = images.inspect(s(&vmdk)).await.unwrap_err();
    assert!(
        matches!(&e, ImageError::Invalid(m) if m.contains("is damaged") && m.contains("after EOF")),
        "{e:?}"
    );

    // A VHD cut short is refused when opened.
    let vhd = image(&dir, "cut.vhd", "vpc", &[]);
    truncate(&vhd, 500_000);
    let e = images.inspect(s(&vhd)).await.unwrap_err();
    assert!(
        matches!(&e, ImageError::Invalid(m) if m.contains("truncated")),
        "{e:?}"
    );

    // Converting the corrupt qcow2 fails with qemu-img's reason, not a half-written file.
    let dest = images.work_dir("w1").join("out.qcow2");
    let e = images
        .convert(s(&l1), "qcow2", &dest, "qcow2", &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(&e, ImageError::Invalid(_)), "{e:?}");
    assert!(!dest.exists());
}

#[tokio::test]
async fn convert_reports_progress_and_replaces_a_partial() {
    let dir = Scratch::new("convert");
    let images = dir.images();
    let src = image(&dir, "src.vmdk", "vmdk", &[]);
    let work = images.work_dir("0190f5a2-7c1e-7b3a-9d4e-5f6a7b8c9d0e.s2t7.0");
    let dest = work.join("disk-0.qcow2");
    // A killed earlier run's leftover.
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("disk-0.qcow2.partial"), b"half a disk").unwrap();

    let seen = Seen::default();
    let n = images
        .convert(s(&src), "vmdk", &dest, "qcow2", progress!(seen))
        .await
        .unwrap();
    assert_eq!(n, 64 << 20);
    let all = seen.all();
    assert!(all.len() >= 3, "{all:?}");
    assert!(all.iter().all(|t| t.total == 64 << 20), "{all:?}");
    assert!(
        all.windows(2).all(|w| w[0].done < w[1].done),
        "progress only grows: {all:?}"
    );
    assert_eq!(
        seen.last(),
        Transferred {
            done: 64 << 20,
            total: 64 << 20
        }
    );
    assert!(!work.join("disk-0.qcow2.partial").exists());
    run(
        "qemu-img",
        &[
            "compare",
            "-q",
            "-f",
            "vmdk",
            "-F",
            "qcow2",
            s(&src),
            s(&dest),
        ],
    );
    let info = images.inspect(s(&dest)).await.unwrap();
    assert_eq!(
        (info.format.as_str(), info.virtual_size),
        ("qcow2", 64 << 20)
    );

    // Again over the finished file: replaced whole.
    images
        .convert(s(&src), "vmdk", &dest, "qcow2", &|_| {})
        .await
        .unwrap();
    run(
        "qemu-img",
        &[
            "compare",
            "-q",
            "-f",
            "vmdk",
            "-F",
            "qcow2",
            s(&src),
            s(&dest),
        ],
    );

    // The wrong format for the source is qemu-img's refusal.
    let e = images
        .convert(s(&src), "qcow2", &work.join("x.qcow2"), "qcow2", &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ImageError::Invalid(m) if m.contains("not in qcow2 format")),
        "{e:?}"
    );
    // Outside the work root, or an option for a format: refused before qemu-img runs.
    for (dest, format) in [
        (dir.path("elsewhere.qcow2"), "qcow2"),
        (work.join("../../escape.qcow2"), "qcow2"),
        (work.join("y.qcow2"), "-o"),
    ] {
        let e = images
            .convert(s(&src), "vmdk", &dest, format, &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(&e, ImageError::Invalid(_)), "{dest:?}: {e:?}");
        assert!(!dest.exists());
    }
    let missing = dir.path("missing.vmdk");
    assert!(matches!(
        images.convert(s(&missing), "vmdk", &dest, "qcow2", &|_| {}).await,
        Err(ImageError::NotFound(m)) if m == format!("no such file: {}", missing.display())
    ));
}

const DESCRIPTOR: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="web-disk1.vmdk" ovf:id="file1" ovf:size="SIZE"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"/>
  </NetworkSection>
  <VirtualSystem ovf:id="web">
    <Info>A virtual machine</Info>
    <Name>web</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

/// An exported VM's files in `dir/src`: web.ovf, web-disk1.vmdk (streamOptimized), a long-named
/// notes file and web.mf with SHA256 lines from `sha256sum`.
fn export(dir: &Scratch) -> PathBuf {
    let src = dir.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let plain = image(dir, "plain.vmdk", "vmdk", &[]);
    let disk = src.join("web-disk1.vmdk");
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "vmdk",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            s(&plain),
            s(&disk),
        ],
    );
    let size = std::fs::metadata(&disk).unwrap().len();
    std::fs::write(
        src.join("web.ovf"),
        DESCRIPTOR.replace("SIZE", &size.to_string()),
    )
    .unwrap();
    std::fs::create_dir_all(src.join(LONG_NAME).parent().unwrap()).unwrap();
    std::fs::write(src.join(LONG_NAME), "exported by hand\n").unwrap();
    let mut manifest = String::new();
    for f in ["web.ovf", "web-disk1.vmdk"] {
        let hex = sha256sum(&src.join(f));
        manifest.push_str(&format!("SHA256({f})= {hex}\n"));
    }
    std::fs::write(src.join("web.mf"), manifest).unwrap();
    src
}

/// Longer than the 100 bytes a ustar name field holds: ustar splits it into its prefix field, GNU
/// writes an `L` header, pax an `x` header.
const LONG_NAME: &str = "extras/notes-about-this-virtual-machine-and-its-export/how-it-was-exported-from-the-old-cluster-before-the-move.txt";

fn sha256sum(path: &Path) -> String {
    run("sha256sum", &[s(path)])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn ova_is_listed_digested_and_extracted() {
    let dir = Scratch::new("ova");
    let images = dir.images();
    let src = export(&dir);
    let disk_size = std::fs::metadata(src.join("web-disk1.vmdk")).unwrap().len();
    // ustar (what the OVF specification asks for; the long name goes in its prefix field), GNU
    // (`./` names and an `L` long-name header) and pax (an `x` header with the path).
    let cases = [
        (
            "ustar",
            vec!["--format=ustar"],
            ["web.ovf", "web-disk1.vmdk", "web.mf"],
        ),
        (
            "gnu",
            vec!["--format=gnu"],
            ["./web.ovf", "./web-disk1.vmdk", "./web.mf"],
        ),
        (
            "pax",
            vec!["--format=pax"],
            ["web.ovf", "web-disk1.vmdk", "web.mf"],
        ),
    ];
    for (name, flags, members) in cases {
        let ova = dir.path(&format!("web-{name}.ova"));
        let mut args: Vec<&str> = flags.clone();
        args.extend(["-cf", s(&ova), "-C", s(&src)]);
        args.extend(members);
        let long = format!("./{LONG_NAME}");
        args.push(if name == "gnu" { &long } else { LONG_NAME });
        run("tar", &args);
        let ova = s(&ova);

        let p = images
            .open_package(ova)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.ovf_name, "web.ovf", "{name}");
        assert_eq!(
            p.ovf,
            std::fs::read_to_string(src.join("web.ovf")).unwrap(),
            "{name}"
        );
        let (mf_name, mf) = p.manifest.clone().expect("the manifest");
        assert_eq!(mf_name, "web.mf", "{name}");
        let mut want = vec![
            (
                "web.ovf".to_string(),
                std::fs::metadata(src.join("web.ovf")).unwrap().len(),
            ),
            ("web-disk1.vmdk".to_string(), disk_size),
            ("web.mf".to_string(), mf.len() as u64),
        ];
        want.push((LONG_NAME.to_string(), 17));
        assert_eq!(p.files, want, "{name}");

        // The descriptor and manifest as the import workflow reads them.
        let ovf = drover_kinds::ovf::parse(&p.ovf).unwrap();
        assert_eq!((ovf.cpus, ovf.memory_bytes), (2, 2048 << 20));
        assert_eq!(ovf.disks[0].file, "web-disk1.vmdk");
        assert_eq!(ovf.disks[0].file_size, Some(disk_size));
        assert_eq!(ovf.firmware, drover_kinds::ovf::Firmware::Efi);
        for entry in drover_kinds::ovf::parse_manifest(&mf).unwrap() {
            let seen = Seen::default();
            let hex = images
                .digest(ova, &entry.file, &entry.algorithm, progress!(seen))
                .await
                .unwrap();
            assert_eq!(hex, entry.hex, "{name}: {}", entry.file);
            let size = want.iter().find(|(f, _)| *f == entry.file).unwrap().1;
            assert_eq!(
                seen.last(),
                Transferred {
                    done: size,
                    total: size
                }
            );
        }
        let sha1 = images
            .digest(ova, "web-disk1.vmdk", "sha1", &|_| {})
            .await
            .unwrap();
        let want_sha1 = run("sha1sum", &[s(&src.join("web-disk1.vmdk"))]);
        assert_eq!(sha1, want_sha1.split_whitespace().next().unwrap());

        let dest = images.work_dir(name).join("disk-0.extracted");
        let seen = Seen::default();
        let n = images
            .extract(ova, "web-disk1.vmdk", &dest, progress!(seen))
            .await
            .unwrap();
        assert_eq!(n, disk_size);
        assert_eq!(
            seen.last(),
            Transferred {
                done: disk_size,
                total: disk_size
            }
        );
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(src.join("web-disk1.vmdk")).unwrap(),
            "{name}"
        );
        assert!(!dest.with_file_name("disk-0.extracted.partial").exists());
        let info = images.inspect(s(&dest)).await.unwrap();
        assert_eq!(
            (info.format.as_str(), info.virtual_size),
            ("vmdk", 64 << 20)
        );
        let hex = images
            .digest(ova, LONG_NAME, "sha256", &|_| {})
            .await
            .unwrap();
        assert_eq!(hex, sha256sum(&src.join(LONG_NAME)), "{name}");

        assert!(matches!(
            images.digest(ova, "web-disk2.vmdk", "sha256", &|_| {}).await,
            Err(ImageError::NotFound(m)) if m.contains("has no member web-disk2.vmdk")
        ));
        assert!(matches!(
            images.digest(ova, "web-disk1.vmdk", "md5", &|_| {}).await,
            Err(ImageError::Invalid(m)) if m.contains("md5")
        ));
    }
}

#[tokio::test]
async fn damaged_and_odd_ovas() {
    let dir = Scratch::new("odd-ova");
    let images = dir.images();
    let src = export(&dir);

    // The descriptor is not first: still found.
    let late = dir.path("late.ova");
    run(
        "tar",
        &[
            "--format=ustar",
            "-cf",
            s(&late),
            "-C",
            s(&src),
            "web-disk1.vmdk",
            "web.mf",
            "web.ovf",
        ],
    );
    let p = images.open_package(s(&late)).await.unwrap();
    assert_eq!(p.ovf_name, "web.ovf");
    assert_eq!(p.files[0].0, "web-disk1.vmdk");

    // No descriptor at all.
    let bare = dir.path("bare.ova");
    run(
        "tar",
        &[
            "--format=ustar",
            "-cf",
            s(&bare),
            "-C",
            s(&src),
            "web-disk1.vmdk",
        ],
    );
    assert!(matches!(
        images.open_package(s(&bare)).await,
        Err(ImageError::Invalid(m)) if m.contains("holds no .ovf descriptor (its files: web-disk1.vmdk)")
    ));

    // Cut in the middle of the disk.
    let cut = dir.path("cut.ova");
    run(
        "tar",
        &[
            "--format=ustar",
            "-cf",
            s(&cut),
            "-C",
            s(&src),
            "web.ovf",
            "web-disk1.vmdk",
        ],
    );
    // Half way through the disk: after the descriptor's header and data, and the disk's header.
    let ovf_len = std::fs::metadata(src.join("web.ovf")).unwrap().len();
    let disk_len = std::fs::metadata(src.join("web-disk1.vmdk")).unwrap().len();
    truncate(&cut, 512 + ovf_len.div_ceil(512) * 512 + 512 + disk_len / 2);
    assert!(matches!(
        images.open_package(s(&cut)).await,
        Err(ImageError::Invalid(m)) if m.contains("is truncated") && m.contains("web-disk1.vmdk")
    ));

    // Not a tar.
    let text = dir.path("text.ova");
    std::fs::write(&text, "x".repeat(2048)).unwrap();
    assert!(matches!(
        images.open_package(s(&text)).await,
        Err(ImageError::Invalid(m)) if m.contains("is not an OVA")
    ));

    let missing = dir.path("missing.ova");
    assert_eq!(
        images.open_package(s(&missing)).await,
        Err(ImageError::NotFound(format!(
            "no such file: {}",
            missing.display()
        )))
    );
    assert!(matches!(
        images.open_package("http://127.0.0.1:9/web.ova").await,
        Err(ImageError::Invalid(m)) if m.contains("download it first")
    ));
    assert!(matches!(
        images.open_package(s(&src.join("web-disk1.vmdk"))).await,
        Err(ImageError::Invalid(m)) if m.contains("neither an .ova nor an .ovf")
    ));
}

#[tokio::test]
async fn ovf_with_its_files_beside_it() {
    let dir = Scratch::new("ovf");
    let images = dir.images();
    let src = export(&dir);
    let ovf = src.join("web.ovf");
    let ovf = s(&ovf);
    let p = images.open_package(ovf).await.unwrap();
    assert_eq!(p.ovf_name, "web.ovf");
    let names: Vec<&str> = p.files.iter().map(|(f, _)| f.as_str()).collect();
    // The descriptor, what its References name, and its manifest; not the unrelated notes.
    assert_eq!(names, ["web.ovf", "web-disk1.vmdk", "web.mf"]);
    assert_eq!(p.manifest.as_ref().unwrap().0, "web.mf");

    let hex = images
        .digest(ovf, "web-disk1.vmdk", "sha256", &|_| {})
        .await
        .unwrap();
    assert_eq!(hex, sha256sum(&src.join("web-disk1.vmdk")));
    let dest = images.work_dir("w").join("disk-0.extracted");
    images
        .extract(ovf, "web-disk1.vmdk", &dest, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(src.join("web-disk1.vmdk")).unwrap()
    );
    assert!(matches!(
        images.digest(ovf, "../plain.vmdk", "sha256", &|_| {}).await,
        Err(ImageError::Invalid(m)) if m.contains("without '..'")
    ));
    assert!(matches!(
        images.digest(ovf, "web-disk2.vmdk", "sha256", &|_| {}).await,
        Err(ImageError::NotFound(m)) if m.starts_with("no such file:")
    ));

    // A referenced disk that is not there is left out of the list for the workflow to name.
    std::fs::remove_file(src.join("web-disk1.vmdk")).unwrap();
    let p = images.open_package(ovf).await.unwrap();
    let names: Vec<&str> = p.files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, ["web.ovf", "web.mf"]);
}

/// Serves `root`'s files with Range support (what CDI's importer and the images port's probe read
/// with); `/status/<code>` answers that status. `/plain/<file>` ignores Range and sends the whole
/// file, as a server without range support does; `/chunked/<file>` does too, without a
/// Content-Length (so a HEAD says no length either).
pub(super) async fn serve(
    State(root): State<PathBuf>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(code) = path.strip_prefix("status/") {
        return StatusCode::from_u16(code.parse().unwrap())
            .unwrap()
            .into_response();
    }
    let (path, ranges, length) = if let Some(p) = path.strip_prefix("plain/") {
        (p, false, true)
    } else if let Some(p) = path.strip_prefix("chunked/") {
        (p, false, false)
    } else {
        (path.as_str(), true, true)
    };
    let Ok(data) = tokio::fs::read(root.join(path)).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !length {
        let body =
            axum::body::Body::from_stream(futures::stream::iter([Ok::<_, std::io::Error>(data)]));
        return body.into_response();
    }
    let len = data.len() as u64;
    let range = headers
        .get(header::RANGE)
        .filter(|_| ranges)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|r| {
            let (a, b) = r.split_once('-')?;
            let a: u64 = a.parse().ok()?;
            let b: u64 = if b.is_empty() {
                len.checked_sub(1)?
            } else {
                b.parse::<u64>().ok()?.min(len.checked_sub(1)?)
            };
            (a <= b).then_some((a, b))
        });
    match range {
        Some((a, b)) => (
            StatusCode::PARTIAL_CONTENT,
            [
                (header::ACCEPT_RANGES, "bytes".to_string()),
                (header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}")),
            ],
            data[a as usize..=b as usize].to_vec(),
        )
            .into_response(),
        None if ranges => ([(header::ACCEPT_RANGES, "bytes")], data).into_response(),
        None => data.into_response(),
    }
}

/// A file server on a free loopback port; aborted when the handle drops.
pub(super) struct FileServer {
    pub(super) url: String,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) async fn file_server(root: PathBuf) -> FileServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/{*path}", get(serve)).with_state(root);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    FileServer { url, task }
}

#[tokio::test]
async fn download_streams_into_the_work_dir() {
    let dir = Scratch::new("download");
    let images = dir.images();
    let src = export(&dir);
    let ova = dir.path("web.ova");
    run(
        "tar",
        &[
            "--format=ustar",
            "-cf",
            s(&ova),
            "-C",
            s(&src),
            "web.ovf",
            "web-disk1.vmdk",
            "web.mf",
        ],
    );
    let server = file_server(dir.0.clone()).await;
    let dest = images.work_dir("dl").join("package.ova");
    // A killed earlier download's leftover.
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(
        dest.with_file_name("package.ova.partial"),
        vec![7u8; 1 << 20],
    )
    .unwrap();

    let seen = Seen::default();
    let url = format!("{}/web.ova", server.url);
    let n = images.download(&url, &dest, progress!(seen)).await.unwrap();
    let size = std::fs::metadata(&ova).unwrap().len();
    assert_eq!(n, size);
    assert_eq!(
        seen.last(),
        Transferred {
            done: size,
            total: size
        }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&ova).unwrap());
    assert!(!dest.with_file_name("package.ova.partial").exists());
    // What the workflow does next: read the downloaded package.
    assert_eq!(
        images.open_package(s(&dest)).await.unwrap().ovf_name,
        "web.ovf"
    );

    let other = images.work_dir("dl").join("other.ova");
    let cases = [
        (format!("{}/nothing.ova", server.url), "not found"),
        (format!("{}/status/503", server.url), "transient"),
        (format!("{}/status/403", server.url), "invalid"),
        ("ftp://127.0.0.1/web.ova".to_string(), "invalid"),
    ];
    for (url, want) in cases {
        let e = images.download(&url, &other, &|_| {}).await.unwrap_err();
        let kind = match e {
            ImageError::NotFound(_) => "not found",
            ImageError::Transient(_) => "transient",
            ImageError::Invalid(_) => "invalid",
        };
        assert_eq!(kind, want, "{url}: {e}");
        assert!(!other.exists());
    }
    // Nothing listens on a port just freed: worth retrying.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(matches!(
        images
            .download(&format!("http://127.0.0.1:{port}/web.ova"), &other, &|_| {})
            .await,
        Err(ImageError::Transient(_))
    ));
    assert!(matches!(
        images.download(&url, &dir.path("outside.ova"), &|_| {}).await,
        Err(ImageError::Invalid(m)) if m.contains("not inside the work root")
    ));
}

/// `qemu-img info --output=json -f <format>` of a local file: its format, virtual size and backing
/// file, what inspecting it over http must say.
fn qemu_info(path: &Path, format: &str) -> (String, u64, Option<String>) {
    let out = run(
        "qemu-img",
        &["info", "--output=json", "-f", format, s(path)],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v["format"].as_str().unwrap().to_string(),
        v["virtual-size"].as_u64().unwrap(),
        v["backing-filename"].as_str().map(str::to_string),
    )
}

/// An image of `format` converted from a 64 MiB raw disk whose first 6 MiB and 40th MiB are
/// incompressible, so every format's file is longer than the 4 MiB the probe reads first.
fn served_image(dir: &Scratch, name: &str, format: &str, options: &[&str]) -> PathBuf {
    let raw = dir.path("source.raw");
    if !raw.exists() {
        let mut data = vec![0u8; 64 << 20];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in (0..6 << 20).chain(40 << 20..41 << 20) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data[i] = x as u8;
        }
        std::fs::write(&raw, data).unwrap();
    }
    let path = dir.path(name);
    let mut args = vec!["convert", "-q", "-f", "raw", "-O", format];
    args.extend(options);
    args.extend([s(&raw), s(&path)]);
    run("qemu-img", &args);
    path
}

fn kind(e: &ImageError) -> &'static str {
    match e {
        ImageError::NotFound(_) => "not found",
        ImageError::Transient(_) => "transient",
        ImageError::Invalid(_) => "invalid",
    }
}

#[tokio::test]
async fn inspect_over_http() {
    // Read from the image's headers with range requests (this machine's qemu-img has no curl
    // driver), each answer what `qemu-img info` says of the local file.
    let dir = Scratch::new("http");
    let images = dir.images();
    let cases = [
        ("served.qcow2", "qcow2", &[][..]),
        ("served.raw", "raw", &[][..]),
        (
            "served.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"][..],
        ),
        ("sparse.vmdk", "vmdk", &[][..]),
        ("served-dynamic.vhd", "vpc", &[][..]),
        ("served-fixed.vhd", "vpc", &["-o", "subformat=fixed"][..]),
        ("served.vhdx", "vhdx", &[][..]),
        ("served.vdi", "vdi", &[][..]),
    ];
    let mut served = Vec::new();
    for (name, format, options) in cases {
        let path = served_image(&dir, name, format, options);
        assert!(
            std::fs::metadata(&path).unwrap().len() > 4 << 20,
            "{name} is longer than what is read first"
        );
        served.push((name, qemu_info(&path, format)));
    }
    let server = file_server(dir.0.clone()).await;
    for (name, (format, size, _)) in &served {
        // A server that answers Range, and one that sends the whole file (only its start is
        // read).
        for prefix in ["", "plain/"] {
            let url = format!("{}/{prefix}{name}", server.url);
            let got = images.inspect(&url).await;
            if prefix == "plain/" && *name == "served-fixed.vhd" {
                // A fixed VHD's footer is at its end, out of reach without ranges.
                assert!(
                    matches!(&got, Err(ImageError::Invalid(m)) if m.contains("ignores range requests")),
                    "{url}: {got:?}"
                );
                continue;
            }
            let info = got.unwrap_or_else(|e| panic!("{url}: {e:?}"));
            assert_eq!(
                (info.format.as_str(), info.virtual_size),
                (format.as_str(), *size),
                "{url}"
            );
            assert_eq!(info.actual_size, None, "{url}");
            assert_eq!(info.backing_file, None, "{url}");
            assert!(!info.corrupt && !info.encrypted, "{url}");
        }
    }

    // A header is read whatever the server says of the length; a raw image is its length.
    let url = format!("{}/chunked/served.qcow2", server.url);
    let info = images.inspect(&url).await.unwrap();
    assert_eq!(
        (info.format.as_str(), info.virtual_size),
        ("qcow2", 64 << 20)
    );
    let e = images
        .inspect(&format!("{}/chunked/served.raw", server.url))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ImageError::Invalid(m) if m.contains("Content-Length")),
        "{e:?}"
    );

    // Overlays name their backing files, as qemu-img reads them.
    let base = dir.path("served.qcow2");
    let over = dir.path("over.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&base),
            "-F",
            "qcow2",
            s(&over),
        ],
    );
    let over_vmdk = dir.path("over.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            s(&dir.path("sparse.vmdk")),
            "-F",
            "vmdk",
            s(&over_vmdk),
        ],
    );
    for (path, format) in [(&over, "qcow2"), (&over_vmdk, "vmdk")] {
        let (_, size, backing) = qemu_info(path, format);
        assert!(backing.is_some());
        let name = path.file_name().unwrap().to_str().unwrap();
        let info = images
            .inspect(&format!("{}/{name}", server.url))
            .await
            .unwrap();
        assert_eq!(
            (info.format.as_str(), info.virtual_size, info.backing_file),
            (format, size, backing),
            "{name}"
        );
    }

    // A descriptor's extents are other files.
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            s(&dir.path("flat.vmdk")),
            "64M",
        ],
    );
    let e = images
        .inspect(&format!("{}/flat.vmdk", server.url))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ImageError::Invalid(m) if m.contains("vmdk descriptor")),
        "{e:?}"
    );

    // Errors: gone, worth retrying, or refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cases = [
        (format!("{}/nothing.qcow2", server.url), "not found"),
        (format!("{}/plain/nothing.qcow2", server.url), "not found"),
        (format!("{}/status/503", server.url), "transient"),
        (format!("{}/status/403", server.url), "invalid"),
        (format!("http://127.0.0.1:{port}/a.qcow2"), "transient"),
        ("https://127.0.0.1:9/a.qcow2".to_string(), "invalid"),
    ];
    for (url, want) in cases {
        let e = images.inspect(&url).await.unwrap_err();
        assert_eq!(kind(&e), want, "{url}: {e}");
    }
    let e = images
        .inspect("https://127.0.0.1:9/a.qcow2")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over http only"), "{e}");
}

#[tokio::test]
async fn remove_clears_a_work_dir_and_nothing_else() {
    let dir = Scratch::new("remove");
    let images = dir.images();
    let work = images.work_dir("0190f5a2-7c1e-7b3a-9d4e-5f6a7b8c9d0e.s1t1.0");
    assert_eq!(work.parent(), Some(images.work_root()));
    std::fs::create_dir_all(work.join("sub")).unwrap();
    std::fs::write(work.join("sub/a.qcow2"), b"a").unwrap();
    // A link out of the work dir is removed, not followed.
    let outside = dir.path("keep.txt");
    std::fs::write(&outside, b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, work.join("link")).unwrap();
    images.remove(&work).await.unwrap();
    assert!(!work.exists());
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    images.remove(&work).await.unwrap();
    for refused in [
        images.work_root().to_path_buf(),
        outside.clone(),
        work.join("../.."),
    ] {
        assert!(
            matches!(images.remove(&refused).await, Err(ImageError::Invalid(_))),
            "{refused:?}"
        );
    }
    assert!(outside.exists());
}
