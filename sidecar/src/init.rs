//! `weft-proxy init`: the nat-table rules an init container writes so that a pod's TCP traffic
//! goes through its sidecar without the application knowing.
//!
//! Inbound connections are redirected to the proxy's inbound port, outbound ones to its outbound
//! port. The proxy's own connections (matched by its uid) are left alone, otherwise they would
//! loop back into it; so are loopback traffic, the control-plane ports (the proxy must reach its
//! control plane before it can route anything), the admin port (probes and tooling) and whatever
//! the operator excludes.
//!
//! [`plan`] computes the rules without touching the system, so they are unit-tested; [`run`]
//! applies them idempotently: chains are created when absent, flushed and refilled, and the
//! jumps into them are added only when `iptables -C` does not find them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

/// Chain holding the inbound capture rules, jumped to from `PREROUTING`.
pub const INBOUND_CHAIN: &str = "WEFT_INBOUND";
/// Chain holding the outbound capture rules, jumped to from `OUTPUT`.
pub const OUTPUT_CHAIN: &str = "WEFT_OUTPUT";
/// The uid the sidecar runs as unless told otherwise.
pub const DEFAULT_PROXY_UID: u32 = 2102;

/// How many copies of a jump rule `--remove` deletes at most; more would mean something keeps
/// re-adding them.
const MAX_JUMP_COPIES: usize = 16;

/// Flags of `weft-proxy init`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct InitArgs {
    /// Uid the sidecar runs as; its connections are not captured, or they would loop back into it.
    #[arg(long, value_name = "UID", default_value_t = DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,
    /// Port the sidecar accepts captured outbound connections on.
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port the sidecar accepts captured inbound connections on.
    #[arg(long, value_name = "PORT", default_value_t = 15006)]
    pub inbound_port: u16,
    /// Control-plane port, never captured outbound: the sidecar must reach its control plane
    /// before it has any configuration. Repeat or comma-separate for several.
    #[arg(long = "control-plane-port", value_name = "PORT", value_delimiter = ',', default_values_t = [15010])]
    pub control_plane_ports: Vec<u16>,
    /// The sidecar's admin port, never captured inbound so probes and tooling reach it directly.
    #[arg(long, value_name = "PORT", default_value_t = 15020)]
    pub admin_port: u16,
    /// Comma-separated inbound destination ports that bypass the sidecar.
    #[arg(long, value_name = "PORTS", default_value = "")]
    pub exclude_inbound_ports: String,
    /// Comma-separated outbound destination ports that bypass the sidecar.
    #[arg(long, value_name = "PORTS", default_value = "")]
    pub exclude_outbound_ports: String,
    /// Comma-separated IPv4 CIDRs (or addresses) whose outbound traffic bypasses the sidecar.
    #[arg(long, value_name = "CIDRS", default_value = "")]
    pub exclude_outbound_cidrs: String,
    /// Print the iptables commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the jump rules and chains instead of installing them; succeeds when already absent.
    #[arg(long)]
    pub remove: bool,
    /// The iptables binary (e.g. `iptables-legacy` where the node uses the legacy backend).
    #[arg(long, value_name = "PATH", default_value = "iptables")]
    pub iptables: PathBuf,
}

/// Invalid `weft-proxy init` input, naming the flag so the operator knows what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InitError {
    /// A port that is not 1 to 65535.
    #[error("{flag}: {value:?} is not a port (expected an integer from 1 to 65535)")]
    InvalidPort {
        /// The flag the value came from.
        flag: &'static str,
        /// The offending value.
        value: String,
    },
    /// A CIDR that cannot be used in an IPv4 rule.
    #[error("{flag}: {value:?} is not an IPv4 CIDR ({reason})")]
    InvalidCidr {
        /// The flag the value came from.
        flag: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The rules to install, as iptables argument vectors (`-t nat -A CHAIN ...`): first the rules of
/// [`INBOUND_CHAIN`] and [`OUTPUT_CHAIN`], each ending with its REDIRECT, then the two jumps
/// from `PREROUTING` and `OUTPUT`.
pub fn plan(args: &InitArgs) -> Result<Vec<Vec<String>>, InitError> {
    for (flag, port) in [
        ("--outbound-port", args.outbound_port),
        ("--inbound-port", args.inbound_port),
        ("--admin-port", args.admin_port),
    ] {
        if port == 0 {
            return Err(InitError::InvalidPort { flag, value: port.to_string() });
        }
    }
    if let Some(port) = args.control_plane_ports.iter().find(|port| **port == 0) {
        return Err(InitError::InvalidPort { flag: "--control-plane-port", value: port.to_string() });
    }

    let mut inbound_exclusions: BTreeMap<u16, String> = BTreeMap::new();
    for port in parse_ports("--exclude-inbound-ports", &args.exclude_inbound_ports)? {
        inbound_exclusions.insert(port, format!("weft: inbound port {port} excluded"));
    }
    inbound_exclusions.insert(args.admin_port, format!("weft: admin port {} excluded", args.admin_port));

    let mut outbound_exclusions: BTreeMap<u16, String> = BTreeMap::new();
    for port in parse_ports("--exclude-outbound-ports", &args.exclude_outbound_ports)? {
        outbound_exclusions.insert(port, format!("weft: outbound port {port} excluded"));
    }
    for port in &args.control_plane_ports {
        outbound_exclusions.insert(*port, format!("weft: control-plane port {port} excluded"));
    }
    let cidrs = parse_cidrs("--exclude-outbound-cidrs", &args.exclude_outbound_cidrs)?;

    let mut rules = Vec::new();
    for (port, comment) in &inbound_exclusions {
        rules.push(rule(INBOUND_CHAIN, &["--dport", &port.to_string()], comment, &["-j", "RETURN"]));
    }
    let inbound_port = args.inbound_port.to_string();
    rules.push(rule(
        INBOUND_CHAIN,
        &[],
        "weft: redirect inbound to the proxy",
        &["-j", "REDIRECT", "--to-ports", &inbound_port],
    ));

    let uid = args.proxy_uid.to_string();
    rules.push(rule(
        OUTPUT_CHAIN,
        &["-m", "owner", "--uid-owner", &uid],
        &format!("weft: proxy uid {uid} excluded"),
        &["-j", "RETURN"],
    ));
    // Includes the application talking to its own pod IP, which the kernel routes over lo.
    rules.push(rule(OUTPUT_CHAIN, &["-o", "lo"], "weft: loopback excluded", &["-j", "RETURN"]));
    rules.push(rule(OUTPUT_CHAIN, &["-d", "127.0.0.1/32"], "weft: localhost excluded", &["-j", "RETURN"]));
    for (port, comment) in &outbound_exclusions {
        rules.push(rule(OUTPUT_CHAIN, &["--dport", &port.to_string()], comment, &["-j", "RETURN"]));
    }
    for cidr in &cidrs {
        rules.push(rule(
            OUTPUT_CHAIN,
            &["-d", cidr],
            &format!("weft: outbound CIDR {cidr} excluded"),
            &["-j", "RETURN"],
        ));
    }
    let outbound_port = args.outbound_port.to_string();
    rules.push(rule(
        OUTPUT_CHAIN,
        &[],
        "weft: redirect outbound to the proxy",
        &["-j", "REDIRECT", "--to-ports", &outbound_port],
    ));

    rules.extend(jump_rules());
    Ok(rules)
}

/// Installs (or with `--remove` removes) the rules; with `--dry-run` prints the commands.
pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    let rules = plan(args)?;
    let iptables = Iptables { program: args.iptables.clone() };
    match (args.remove, args.dry_run) {
        (false, true) => {
            for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
                println!("{}", iptables.command_line(&nat(&["-N", chain])));
            }
            for rule in &rules {
                println!("{}", iptables.command_line(rule));
            }
            Ok(())
        }
        (true, true) => {
            for jump in jump_rules() {
                println!("{}", iptables.command_line(&with_operation(&jump, "-D")));
            }
            for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
                println!("{}", iptables.command_line(&nat(&["-F", chain])));
                println!("{}", iptables.command_line(&nat(&["-X", chain])));
            }
            Ok(())
        }
        (false, false) => install(&iptables, &rules),
        (true, false) => remove(&iptables),
    }
}

fn install(iptables: &Iptables, rules: &[Vec<String>]) -> anyhow::Result<()> {
    for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
        if !iptables.chain_exists(chain)? {
            iptables.run(&nat(&["-N", chain]))?;
        }
        iptables.run(&nat(&["-F", chain]))?;
    }
    let mut added_jumps = 0;
    for rule in rules {
        if is_jump(rule) {
            // -C compares the whole rule spec, so an identical jump is never added twice.
            if iptables.rule_exists(&with_operation(rule, "-C"))? {
                continue;
            }
            added_jumps += 1;
        }
        iptables.run(rule)?;
    }
    tracing::info!(rules = rules.len(), added_jumps, "traffic capture rules installed");
    Ok(())
}

fn remove(iptables: &Iptables) -> anyhow::Result<()> {
    let mut removed = 0;
    for (parent, chain) in [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTPUT_CHAIN)] {
        if !iptables.chain_exists(chain)? {
            continue;
        }
        // By line number rather than by spec, so jumps written with other options (older
        // versions, hand edits) go too; otherwise the chain could not be deleted.
        for _ in 0..MAX_JUMP_COPIES {
            let listing = iptables.output(&nat(&["-L", parent, "-n", "--line-numbers"]))?;
            let Some(number) = jump_line_numbers(&listing, chain).into_iter().max() else {
                break;
            };
            iptables.run(&nat(&["-D", parent, &number.to_string()]))?;
            removed += 1;
        }
        if !jump_line_numbers(&iptables.output(&nat(&["-L", parent, "-n", "--line-numbers"]))?, chain).is_empty() {
            bail!("more than {MAX_JUMP_COPIES} jumps from {parent} to {chain}; is something re-adding them?");
        }
        iptables.run(&nat(&["-F", chain]))?;
        iptables.run(&nat(&["-X", chain]))?;
        removed += 1;
    }
    tracing::info!(removed, "traffic capture rules removed");
    Ok(())
}

/// The jumps into the chains, for TCP only: the chains' rules all assume TCP.
fn jump_rules() -> Vec<Vec<String>> {
    vec![
        nat(&[
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            "weft: capture inbound TCP",
            "-j",
            INBOUND_CHAIN,
        ]),
        nat(&[
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            "weft: capture outbound TCP",
            "-j",
            OUTPUT_CHAIN,
        ]),
    ]
}

fn rule(chain: &str, matches: &[&str], comment: &str, target: &[&str]) -> Vec<String> {
    let mut args = nat(&["-A", chain, "-p", "tcp"]);
    args.extend(matches.iter().map(|s| (*s).to_owned()));
    args.extend(["-m", "comment", "--comment", comment].map(str::to_owned));
    args.extend(target.iter().map(|s| (*s).to_owned()));
    args
}

fn nat(args: &[&str]) -> Vec<String> {
    ["-t", "nat"].iter().chain(args).map(|s| (*s).to_owned()).collect()
}

fn is_jump(rule: &[String]) -> bool {
    rule.get(3).is_some_and(|chain| chain != INBOUND_CHAIN && chain != OUTPUT_CHAIN)
}

/// The same rule with `-A` replaced by `-C` (check) or `-D` (delete).
fn with_operation(rule: &[String], operation: &str) -> Vec<String> {
    rule.iter().map(|arg| if arg == "-A" { operation.to_owned() } else { arg.clone() }).collect()
}

/// Line numbers of rules jumping to `chain` in `iptables -L PARENT -n --line-numbers` output.
fn jump_line_numbers(listing: &str, chain: &str) -> Vec<u32> {
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let number = fields.next()?.parse().ok()?;
            (fields.next()? == chain).then_some(number)
        })
        .collect()
}

fn parse_ports(flag: &'static str, list: &str) -> Result<Vec<u16>, InitError> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(InitError::InvalidPort { flag, value: item.to_owned() }),
        })
        .collect()
}

/// Parses `a.b.c.d/len` or a bare address (`/32`); host bits are cleared so that the rule shows
/// the network iptables actually matches.
fn parse_cidrs(flag: &'static str, list: &str) -> Result<Vec<String>, InitError> {
    let invalid = |value: &str, reason| InitError::InvalidCidr { flag, value: value.to_owned(), reason };
    let mut cidrs = Vec::new();
    for item in list.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let (address, length) = match item.split_once('/') {
            Some((address, length)) => {
                (address, length.parse::<u8>().map_err(|_| invalid(item, "the prefix length is not a number"))?)
            }
            None => (item, 32),
        };
        let address: Ipv4Addr = match address.parse::<IpAddr>() {
            Ok(IpAddr::V4(address)) => address,
            Ok(IpAddr::V6(_)) => return Err(invalid(item, "IPv6 is not supported; these are iptables rules")),
            Err(_) => return Err(invalid(item, "not an IP address")),
        };
        if length > 32 {
            return Err(invalid(item, "the prefix length exceeds 32"));
        }
        let mask = if length == 0 { 0 } else { u32::MAX << (32 - u32::from(length)) };
        let cidr = format!("{}/{length}", Ipv4Addr::from(u32::from(address) & mask));
        if !cidrs.contains(&cidr) {
            cidrs.push(cidr);
        }
    }
    Ok(cidrs)
}

/// Runs the configured iptables binary. `-w` waits for the xtables lock held by other writers
/// (kubelet, CNI plugins) instead of failing.
#[derive(Debug)]
struct Iptables {
    program: PathBuf,
}

impl Iptables {
    fn command_line(&self, args: &[String]) -> String {
        std::iter::once(self.program.to_string_lossy().into_owned())
            .chain(args.iter().cloned())
            .map(|arg| shell_quote(&arg))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn invoke(&self, args: &[String]) -> anyhow::Result<std::process::Output> {
        let mut command = Command::new(&self.program);
        command.args(["-w", "5"]).args(args);
        tracing::debug!(command = %self.command_line(args), "running");
        command.output().with_context(|| format!("running {}", self.program.display()))
    }

    fn run(&self, args: &[String]) -> anyhow::Result<()> {
        self.output(args).map(drop)
    }

    fn output(&self, args: &[String]) -> anyhow::Result<String> {
        let output = self.invoke(args)?;
        if !output.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.command_line(args),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `-S CHAIN` exits 1 when the chain is absent; anything above 1 is a real failure.
    fn chain_exists(&self, chain: &str) -> anyhow::Result<bool> {
        self.exit_code_is_zero(&nat(&["-S", chain]))
    }

    /// `-C` exits 1 when no such rule exists.
    fn rule_exists(&self, check: &[String]) -> anyhow::Result<bool> {
        self.exit_code_is_zero(check)
    }

    fn exit_code_is_zero(&self, args: &[String]) -> anyhow::Result<bool> {
        let output = self.invoke(args)?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!(
                "`{}` failed ({}): {}",
                self.command_line(args),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:,=+@%".contains(&b));
    if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    fn args(extra: &[&str]) -> InitArgs {
        Cli::try_parse_from(std::iter::once("init").chain(extra.iter().copied())).expect("valid flags").init
    }

    fn lines(extra: &[&str]) -> Vec<String> {
        plan(&args(extra)).expect("valid plan").iter().map(|rule| rule.join(" ")).collect()
    }

    #[test]
    fn default_plan() {
        let expected = [
            "-t nat -A WEFT_INBOUND -p tcp --dport 15020 -m comment --comment weft: admin port 15020 excluded -j RETURN",
            "-t nat -A WEFT_INBOUND -p tcp -m comment --comment weft: redirect inbound to the proxy -j REDIRECT --to-ports 15006",
            "-t nat -A WEFT_OUTPUT -p tcp -m owner --uid-owner 2102 -m comment --comment weft: proxy uid 2102 excluded -j RETURN",
            "-t nat -A WEFT_OUTPUT -p tcp -o lo -m comment --comment weft: loopback excluded -j RETURN",
            "-t nat -A WEFT_OUTPUT -p tcp -d 127.0.0.1/32 -m comment --comment weft: localhost excluded -j RETURN",
            "-t nat -A WEFT_OUTPUT -p tcp --dport 15010 -m comment --comment weft: control-plane port 15010 excluded -j RETURN",
            "-t nat -A WEFT_OUTPUT -p tcp -m comment --comment weft: redirect outbound to the proxy -j REDIRECT --to-ports 15001",
            "-t nat -A PREROUTING -p tcp -m comment --comment weft: capture inbound TCP -j WEFT_INBOUND",
            "-t nat -A OUTPUT -p tcp -m comment --comment weft: capture outbound TCP -j WEFT_OUTPUT",
        ];
        assert_eq!(lines(&[]), expected);
    }

    #[test]
    fn flags_shape_the_rules() {
        struct Case {
            flags: &'static [&'static str],
            present: &'static [&'static str],
            absent: &'static [&'static str],
        }
        let cases = [
            Case {
                flags: &["--proxy-uid", "1337"],
                present: &["-A WEFT_OUTPUT -p tcp -m owner --uid-owner 1337 "],
                absent: &["--uid-owner 2102"],
            },
            Case {
                flags: &["--outbound-port", "16001", "--inbound-port", "16006"],
                present: &["REDIRECT --to-ports 16001", "REDIRECT --to-ports 16006"],
                absent: &["--to-ports 15001", "--to-ports 15006"],
            },
            Case {
                flags: &["--exclude-inbound-ports", "8081, 9090,8081", "--admin-port", "9901"],
                present: &[
                    "-A WEFT_INBOUND -p tcp --dport 8081 ",
                    "-A WEFT_INBOUND -p tcp --dport 9090 ",
                    "-A WEFT_INBOUND -p tcp --dport 9901 -m comment --comment weft: admin port 9901",
                ],
                absent: &["--dport 15020"],
            },
            Case {
                flags: &["--exclude-outbound-ports", "5432,15010"],
                present: &[
                    "-A WEFT_OUTPUT -p tcp --dport 5432 ",
                    "--dport 15010 -m comment --comment weft: control-plane port 15010 excluded",
                ],
                absent: &["weft: outbound port 15010"],
            },
            Case {
                flags: &["--control-plane-port", "15012", "--control-plane-port", "15014,15016"],
                present: &["--dport 15012 ", "--dport 15014 ", "--dport 15016 "],
                absent: &["--dport 15010 "],
            },
            Case {
                flags: &["--exclude-outbound-cidrs", "10.96.0.0/12, 192.168.1.7,10.1.2.3/8,10.0.0.0/8"],
                present: &["-A WEFT_OUTPUT -p tcp -d 10.96.0.0/12 ", "-d 192.168.1.7/32 ", "-d 10.0.0.0/8 "],
                absent: &["10.1.2.3"],
            },
        ];
        for case in cases {
            let lines = lines(case.flags);
            let all = lines.join("\n");
            for needle in case.present {
                assert_eq!(all.matches(needle).count(), 1, "{:?}: {needle:?} once in\n{all}", case.flags);
            }
            for needle in case.absent {
                assert!(!all.contains(needle), "{:?}: {needle:?} absent from\n{all}", case.flags);
            }
            // Exclusions come before the redirect of their chain, the jumps come last.
            for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
                let chain_rules: Vec<_> = lines.iter().filter(|line| line.contains(&format!("-A {chain} "))).collect();
                let (last, rest) = chain_rules.split_last().expect("chain has rules");
                assert!(last.contains("-j REDIRECT"), "{last}");
                assert!(rest.iter().all(|line| line.ends_with("-j RETURN")), "{rest:?}");
            }
            assert!(lines[lines.len() - 2].contains("-A PREROUTING "));
            assert!(lines[lines.len() - 1].contains("-A OUTPUT "));
        }
    }

    #[test]
    fn control_plane_port_is_excluded_even_when_not_listed_elsewhere() {
        let all = lines(&["--exclude-outbound-ports", "", "--exclude-outbound-cidrs", ""]).join("\n");
        assert!(all.contains("-A WEFT_OUTPUT -p tcp --dport 15010 "), "{all}");
    }

    #[test]
    fn invalid_input_names_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--exclude-inbound-ports", "80,abc"], "--exclude-inbound-ports: \"abc\""),
            (&["--exclude-inbound-ports", "0"], "--exclude-inbound-ports: \"0\""),
            (&["--exclude-outbound-ports", "70000"], "--exclude-outbound-ports: \"70000\""),
            (&["--exclude-outbound-ports=-1"], "--exclude-outbound-ports"),
            (&["--exclude-outbound-cidrs", "10.0.0.0/33"], "--exclude-outbound-cidrs: \"10.0.0.0/33\""),
            (&["--exclude-outbound-cidrs", "fd00::/8"], "IPv6"),
            (&["--exclude-outbound-cidrs", "not-an-ip"], "--exclude-outbound-cidrs: \"not-an-ip\""),
            (&["--exclude-outbound-cidrs", "10.0.0.0/x"], "--exclude-outbound-cidrs"),
            (&["--outbound-port", "0"], "--outbound-port"),
            (&["--control-plane-port", "0"], "--control-plane-port"),
        ];
        for (flags, expected) in cases {
            let error = plan(&args(flags)).expect_err("invalid input").to_string();
            assert!(error.contains(expected), "{flags:?}: {error}");
        }
        // Typed flags are rejected by clap, which names them too.
        let error = Cli::try_parse_from(["init", "--control-plane-port", "x"]).expect_err("invalid").to_string();
        assert!(error.contains("--control-plane-port"), "{error}");
    }

    #[test]
    fn checks_and_deletes_use_the_same_spec() {
        let jump = &jump_rules()[1];
        assert_eq!(with_operation(jump, "-C")[2], "-C");
        assert_eq!(with_operation(jump, "-D")[3..], jump[3..]);
        assert!(is_jump(jump));
        assert!(!is_jump(&plan(&args(&[])).expect("plan")[0]));
    }

    #[test]
    fn finds_jumps_in_listings() {
        let listing = "Chain OUTPUT (policy ACCEPT)\n\
                       num  target     prot opt source               destination\n\
                       1    DOCKER     0    --  0.0.0.0/0           !127.0.0.0/8\n\
                       2    WEFT_OUTPUT  6    --  0.0.0.0/0            0.0.0.0/0            /* weft: capture */\n\
                       3    WEFT_OUTPUT  6    --  0.0.0.0/0            0.0.0.0/0\n";
        assert_eq!(jump_line_numbers(listing, OUTPUT_CHAIN), [2, 3]);
        assert!(jump_line_numbers(listing, INBOUND_CHAIN).is_empty());
    }

    #[test]
    fn command_lines_are_shell_quoted() {
        let iptables = Iptables { program: PathBuf::from("iptables") };
        let rule = &plan(&args(&[])).expect("plan")[0];
        assert_eq!(
            iptables.command_line(rule),
            "iptables -t nat -A WEFT_INBOUND -p tcp --dport 15020 -m comment --comment \
             'weft: admin port 15020 excluded' -j RETURN"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
