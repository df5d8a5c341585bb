//! The container images, built by `scripts/images` without a daemon
//! (static binaries on an empty base, umoci), unpacked, and run as a
//! container runtime would run them: each image's entrypoint, as its user,
//! chrooted into its root filesystem, prints its `--version`. The proxy
//! image's `weft-proxy init` (run with the arguments the injector gives
//! weft-init, as root in a pod's network namespace) installs the capture
//! rules with the iptables the image carries. The chart's default images
//! are the ones the script builds.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use support::{documents, find, helm_template, repo, run, run_with, tool};
use weft_e2e::netns::Cluster;

const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Unpacked {
    rootfs: PathBuf,
    config: Value,
}

/// `umoci unpack` of `layout:VERSION` (as root: ownership kept).
fn unpack(layout: &Path, bundle: &Path) -> anyhow::Result<Unpacked> {
    let mut command = Command::new(tool("umoci")?);
    command.arg("unpack").arg("--image").arg(format!("{}:{VERSION}", layout.display())).arg(bundle);
    run(command, Duration::from_secs(120))?;
    let config: Value = serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json"))?)?;
    Ok(Unpacked { rootfs: bundle.join("rootfs"), config })
}

/// Runs the image's entrypoint with `extra` arguments as a runtime would:
/// chrooted into its root filesystem, as its user, with its environment.
fn run_entrypoint(image: &Unpacked, extra: &[&str]) -> anyhow::Result<(String, String)> {
    let process = &image.config["process"];
    let uid = process["user"]["uid"].as_u64().context("no uid")?;
    let gid = process["user"]["gid"].as_u64().context("no gid")?;
    let mut command = Command::new("chroot");
    command.arg(format!("--userspec={uid}:{gid}")).arg(&image.rootfs);
    for a in process["args"].as_array().context("no entrypoint")? {
        command.arg(a.as_str().context("argument")?);
    }
    command.args(extra).env_clear();
    for e in process["env"].as_array().into_iter().flatten() {
        if let Some((k, v)) = e.as_str().and_then(|e| e.split_once('=')) {
            command.env(k, v);
        }
    }
    let (ok, out, err) = run_with(command, None, Duration::from_secs(30))?;
    if !ok {
        bail!("the entrypoint failed: {err}{out}");
    }
    Ok((out, err))
}

fn files(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root)?.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The init container's arguments, as the injector writes them.
fn weft_init_args() -> anyhow::Result<Vec<String>> {
    let mut command = Command::new(weft_e2e::workspace_bin("weftctl")?);
    command.args(["inject", "-q", "-f", "-"]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec:\n  containers: [{name: app, image: example/app:1}]\n";
    let (ok, out, err) = run_with(command, Some(pod.as_bytes()), Duration::from_secs(30))?;
    if !ok {
        bail!("weftctl inject: {err}");
    }
    let injected = documents(&out)?;
    let init = injected[0]["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "weft-init")
        .context("no weft-init")?
        .clone();
    let command: Vec<String> =
        init["command"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
    assert_eq!(command, ["/usr/bin/weft-proxy"]);
    Ok(init["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect())
}

#[test]
fn the_image_script_builds_both_images_and_their_entrypoints_run() -> anyhow::Result<()> {
    tool("umoci")?;
    Cluster::require_supported()?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("oci");
    let mut build = Command::new(repo().join("scripts/images"));
    build.args(["--profile", "dev", "--out"]).arg(&out);
    // The first build compiles the workspace statically in its own target
    // directory.
    let (ok, stdout, stderr) = run_with(build, None, Duration::from_secs(45 * 60))?;
    if !ok {
        bail!("scripts/images failed:\n{stderr}{stdout}");
    }
    println!("{stdout}");

    // The chart's defaults name these images.
    let docs = documents(&helm_template(&[])?)?;
    let container =
        &find(&docs, "Deployment", "weft-cp").context("no Deployment")?["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], format!("ghcr.io/weft-mesh/weft-cp:{VERSION}"));
    let proxy_arg = format!("--proxy-image=ghcr.io/weft-mesh/weft-proxy:{VERSION}");
    assert!(container["args"].as_array().unwrap().iter().any(|a| a == proxy_arg.as_str()));

    for (name, uid) in [("weft-cp", 65532), ("weft-proxy", 2102)] {
        let image = unpack(&out.join(name), &dir.path().join(format!("{name}-bundle")))?;
        let process = &image.config["process"];
        assert_eq!(process["args"][0], format!("/usr/bin/{name}"), "{name}: entrypoint");
        assert_eq!(process["user"]["uid"], uid, "{name}: user");
        assert_ne!(process["user"]["uid"], 0);
        let (stdout, _) = run_entrypoint(&image, &["--version"])?;
        assert_eq!(stdout.trim(), format!("{name} {VERSION}"), "{name} --version");
        let content = files(&image.rootfs)?;
        println!(
            "{name}: entrypoint {} as uid {uid}: `{}`; {} files",
            process["args"][0],
            stdout.trim(),
            content.len()
        );
        if name == "weft-cp" {
            // A static binary and nothing else.
            assert_eq!(content, ["usr/bin/weft-cp"], "weft-cp's image holds more than its binary");
        }
    }

    // weft-init runs the proxy image's `weft-proxy init` as root with the
    // injector's arguments; it executes `iptables`, which the image
    // carries. In a pod's network namespace, chrooted into the image:
    let proxy = dir.path().join("weft-proxy-bundle/rootfs");
    let proxy_config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("weft-proxy-bundle/config.json"))?)?;
    // As a runtime runs a container: the image's environment (its PATH
    // finds iptables), /dev and /proc mounted (in the pod's own mount
    // namespace), chrooted into the root filesystem, read-only as the
    // injector asks for weft-init.
    let env: Vec<String> = proxy_config["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect();
    for dir in ["dev", "proc"] {
        std::fs::create_dir_all(proxy.join(dir))?;
    }
    let mut cluster = Cluster::new("image-init")?;
    let pod = cluster.pod("app")?;
    let in_container = |argv: &[String]| -> anyhow::Result<std::process::Output> {
        // Read-only, as the injector sets weft-init's root filesystem.
        let script = r#"root=$1; shift; mount --bind "$root" "$root" && mount -o remount,bind,ro "$root" && mount --bind /dev "$root/dev" && mount -t proc proc "$root/proc" && exec chroot "$root" "$@""#;
        let mut all =
            vec!["sh".to_string(), "-c".into(), script.into(), "sh".into(), proxy.to_string_lossy().into_owned()];
        all.extend(argv.iter().cloned());
        let mut with_env = vec!["env".to_string(), "-i".to_string()];
        with_env.extend(env.iter().cloned());
        with_env.extend(all);
        let refs: Vec<&str> = with_env.iter().map(String::as_str).collect();
        pod.exec_with(None, &refs, None, Duration::from_secs(30))
    };
    let args = weft_init_args()?;
    let mut argv = vec!["/usr/bin/weft-proxy".to_string()];
    argv.extend(args.iter().cloned());
    let output = in_container(&argv)?;
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "weft-proxy init from the image failed: {log}");
    let output = in_container(&["iptables".to_string(), "-t".into(), "nat".into(), "-S".into()])?;
    assert!(output.status.success(), "iptables -S: {}", String::from_utf8_lossy(&output.stderr));
    let rules = String::from_utf8_lossy(&output.stdout).into_owned();
    for expected in ["-N WEFT_INBOUND", "-N WEFT_OUTPUT", "-j WEFT_INBOUND", "-j WEFT_OUTPUT", "--uid-owner 2102"] {
        assert!(rules.contains(expected), "{expected} missing after weft-proxy init {args:?}:\n{rules}");
    }
    println!("weft-proxy {} from the image (read-only root) installed:\n{rules}", args.join(" "));
    drop(cluster);
    Ok(())
}
