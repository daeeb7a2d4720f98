//! Generates the `baton` command's man pages and shell completions from its clap definition
//! (`src/cli/args.rs`, included below), when the `cli` feature is on.
//!
//! Everything goes to `<target dir>/<profile>/assets/` — `target/release/assets/` after
//! `cargo build --release`:
//!
//! ```text
//! man/baton.1.gz  man/baton-serve.1.gz  man/baton-reload.1.gz  man/baton-check.1.gz
//! completions/baton.bash  completions/_baton  completions/baton.fish
//! ```
//!
//! That directory is three levels above `OUT_DIR` (`<target dir>/<profile>/build/baton-<hash>/out`),
//! the place cargo-deb documents for files a build script makes: cargo-deb and cargo-generate-rpm
//! both read an asset written as `target/release/…` from the real target directory (honouring
//! `CARGO_TARGET_DIR`, `--target` and `--profile`). So `cargo build --release && cargo deb
//! --no-build` (or `cargo generate-rpm`) packages them with nothing else to run.
//! (With cargo's separate `build.build-dir` setting, `OUT_DIR` is no longer under the target
//! directory; set `BATON_ASSETS_DIR` to choose the directory then.) Nothing is written when
//! baton is built as a dependency from a registry or git, nor into another project's target
//! directory (a program that depends on a clone of baton): only when the target directory is
//! inside baton's own tree, or when `BATON_GEN_ASSETS=1` (packaging/build-packages sets it) or
//! `BATON_ASSETS_DIR` asks for them.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cli/args.rs");
    println!("cargo:rerun-if-env-changed=BATON_VERSION");
    println!("cargo:rerun-if-env-changed=BATON_ASSETS_DIR");
    println!("cargo:rerun-if-env-changed=BATON_GEN_ASSETS");
    // Only when baton itself is built, not as a dependency fetched from a registry or git.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let fetched =
        manifest_dir.contains("/.cargo/registry/") || manifest_dir.contains("/.cargo/git/");
    // Not into the target directory of a program that depends on a clone of baton.
    let own_target = std::env::var("OUT_DIR")
        .map(|out| !manifest_dir.is_empty() && out.starts_with(&manifest_dir))
        .unwrap_or(false);
    let asked = std::env::var("BATON_GEN_ASSETS").is_ok_and(|v| v == "1")
        || std::env::var_os("BATON_ASSETS_DIR").is_some_and(|d| !d.is_empty());
    let fetched = fetched || !(own_target || asked);
    // A missing page is reported by cargo-deb, cargo-generate-rpm and packaging/build-packages;
    // it must not fail the build of the program.
    #[cfg(feature = "cli")]
    if !fetched {
        if let Err(e) = assets::generate() {
            println!("cargo:warning=baton: cannot generate man pages and completions: {e}");
        }
    }
    #[cfg(not(feature = "cli"))]
    let _ = fetched;
}

#[cfg(feature = "cli")]
#[allow(dead_code)]
#[path = "src/cli/args.rs"]
mod args;

#[cfg(feature = "cli")]
mod assets {
    use std::fs;
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};

    use clap::CommandFactory;
    use clap_complete::Shell;
    use clap_mangen::roff::{bold, roman, Roff};
    use clap_mangen::Man;

    use crate::args::Cli;

    pub fn generate() -> io::Result<()> {
        let dir = assets_dir()?;
        let man_dir = dir.join("man");
        let completions_dir = dir.join("completions");
        fs::create_dir_all(&man_dir)?;
        fs::create_dir_all(&completions_dir)?;

        let mut cmd = Cli::command();
        cmd.build();
        for page in pages(&cmd)? {
            let mut roff = Vec::new();
            page.render(&mut roff)?;
            write_atomically(&man_dir.join(format!("{}.1.gz", page.name)), &gzip(&roff)?)?;
        }
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "baton", &mut script);
            let name = match shell {
                Shell::Bash => "baton.bash",
                Shell::Zsh => "_baton",
                _ => "baton.fish",
            };
            write_atomically(&completions_dir.join(name), &script)?;
        }
        Ok(())
    }

    /// `<target dir>/<profile>/assets`, or `BATON_ASSETS_DIR`.
    fn assets_dir() -> io::Result<PathBuf> {
        if let Some(dir) = std::env::var_os("BATON_ASSETS_DIR").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| other("no OUT_DIR"))?);
        let profile_dir = out
            .ancestors()
            .nth(3)
            .ok_or_else(|| other("OUT_DIR is not <target>/<profile>/build/<pkg>/out"))?;
        Ok(profile_dir.join("assets"))
    }

    fn other(message: &str) -> io::Error {
        io::Error::other(message.to_owned())
    }

    /// Builds running side by side (`cargo build` and `cargo test`) may write the same file.
    fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, path)
    }

    /// gzip at the highest level, without a name or time stamp (reproducible; what Debian
    /// policy asks of man pages).
    fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes)?;
        gz.finish()
    }

    /// One man page: clap's NAME, SYNOPSIS and OPTIONS around hand-written sections.
    struct Page {
        name: String,
        man: Man,
        description: Vec<Block>,
        sections: Vec<(&'static str, Vec<Block>)>,
        options: bool,
        commands: bool,
    }

    enum Block {
        /// A paragraph.
        P(String),
        /// A list of terms (bold) and their explanation.
        Terms(Vec<(String, String)>),
    }

    fn p(text: &str) -> Block {
        Block::P(text.to_owned())
    }

    fn terms(items: &[(&str, &str)]) -> Block {
        Block::Terms(
            items
                .iter()
                .map(|(t, d)| ((*t).to_owned(), (*d).to_owned()))
                .collect(),
        )
    }

    impl Page {
        fn render(&self, w: &mut dyn Write) -> io::Result<()> {
            self.man.render_title(w)?;
            self.man.render_name_section(w)?;
            self.man.render_synopsis_section(w)?;
            let mut roff = Roff::default();
            write_section(&mut roff, "DESCRIPTION", &self.description);
            roff.to_writer(w)?;
            if self.options {
                self.man.render_options_section(w)?;
            }
            if self.commands {
                self.man.render_subcommands_section(w)?;
            }
            let mut roff = Roff::default();
            for (title, blocks) in &self.sections {
                write_section(&mut roff, title, blocks);
            }
            write_section(
                &mut roff,
                "VERSION",
                &[Block::P(format!("baton {}", crate::args::VERSION))],
            );
            roff.to_writer(w)
        }
    }

    fn write_section(roff: &mut Roff, title: &str, blocks: &[Block]) {
        roff.control("SH", [title]);
        for (i, block) in blocks.iter().enumerate() {
            match block {
                Block::P(text) => {
                    if i > 0 {
                        roff.control("PP", []);
                    }
                    roff.text([roman(text.as_str())]);
                }
                Block::Terms(items) => {
                    for (term, description) in items {
                        roff.control("TP", []);
                        roff.text([bold(term.as_str())]);
                        roff.text([roman(description.as_str())]);
                    }
                }
            }
        }
    }

    fn pages(cmd: &clap::Command) -> io::Result<Vec<Page>> {
        let sub = |name: &str| {
            cmd.find_subcommand(name)
                .cloned()
                .ok_or_else(|| other(&format!("no subcommand {name}")))
        };
        Ok(vec![
            Page {
                name: "baton".into(),
                man: Man::new(cmd.clone()),
                description: baton_description(),
                sections: vec![
                    ("CONFIGURATION FILE", configuration_file()),
                    ("SIGNALS", signals()),
                    ("SYSTEMD", systemd()),
                    ("LOGGING", logging()),
                    ("ENVIRONMENT", environment(cmd)),
                    ("FILES", files()),
                    ("EXIT STATUS", exit_status()),
                    ("SEE ALSO", see_also("baton")),
                ],
                options: true,
                commands: true,
            },
            Page {
                name: "baton-serve".into(),
                man: Man::new(sub("serve")?),
                description: serve_description(),
                sections: vec![
                    ("SIGNALS", signals()),
                    ("ENVIRONMENT", environment(cmd)),
                    ("FILES", files()),
                    ("EXIT STATUS", exit_status()),
                    ("SEE ALSO", see_also("baton-serve")),
                ],
                options: true,
                commands: false,
            },
            Page {
                name: "baton-reload".into(),
                man: Man::new(sub("reload")?),
                description: reload_description(),
                sections: vec![
                    (
                        "ENVIRONMENT",
                        vec![terms(&[(
                            "MAINPID",
                            "The process to reload when --pid is not given; systemd sets it \
                             for ExecReload=.",
                        )])],
                    ),
                    (
                        "FILES",
                        vec![terms(&[(
                            "reload-status.json",
                            "Beside the hand-off socket: the outcome of the last hand-off, \
                             written by the reloaded process and read by baton reload.",
                        )])],
                    ),
                    (
                        "EXIT STATUS",
                        vec![terms(&[
                            (
                                "0",
                                "The successor serves; the old process drains and exits.",
                            ),
                            (
                                "1",
                                "The reload was attempted and failed; the old process serves \
                                 on. The reason is printed.",
                            ),
                            (
                                "64",
                                "Usage: a bad option, no process to reload (no --pid, no \
                                 $MAINPID, no pid file), or a bad --timeout.",
                            ),
                            (
                                "78",
                                "The configuration is invalid: nothing was sent, the running \
                                 process is untouched.",
                            ),
                        ])],
                    ),
                    ("SEE ALSO", see_also("baton-reload")),
                ],
                options: true,
                commands: false,
            },
            Page {
                name: "baton-check".into(),
                man: Man::new(sub("check")?),
                description: vec![p(
                    "Reads the configuration exactly as baton serve would (options, BATON_* \
                       variables, the JSON file and the defaults), resolves the host names of \
                       the listen addresses, and prints one line: \"baton: configuration ok \
                       (FILE): listen ADDR, …\". Nothing is bound and no running process is \
                       touched, so it is safe to run before systemctl reload baton.",
                )],
                sections: vec![
                    (
                        "EXIT STATUS",
                        vec![terms(&[
                            ("0", "The configuration is valid."),
                            (
                                "78",
                                "It is not: one line on standard error names the file or \
                                 variable, the field and the problem.",
                            ),
                            ("64", "Usage: a bad option."),
                        ])],
                    ),
                    ("SEE ALSO", see_also("baton-check")),
                ],
                options: true,
                commands: false,
            },
            Page {
                name: "baton-run".into(),
                man: Man::new(sub("run")?),
                description: vec![
                    p(
                        "Runs COMMAND, a server written in any language, on baton's listeners \
                       (socket activation, the import from a running baton, or a fresh bind), \
                       passed as systemd passes them: fds 3, 4, … with LISTEN_FDS, LISTEN_PID \
                       (the command's own pid) and LISTEN_FDNAMES, and a NOTIFY_SOCKET of \
                       baton's own. baton stays the main process.",
                    ),
                    p(
                        "SIGHUP (systemctl reload, baton reload) starts COMMAND again on the same \
                       sockets; once the new one is ready (READY=1, or --ready=delay:DURATION) \
                       the old one gets --stop-signal and, after --grace, SIGKILL on its process \
                       group. A new one that exits or is not ready within --ready-timeout is \
                       killed; the old one serves on and the reload fails (STATUS=reload \
                       failed: …, baton reload exits 1). If baton's own binary was replaced, \
                       baton re-executes itself first, keeping the sockets and the running \
                       command. SIGTERM stops every generation and exits with the status of \
                       the last one; a serving command that exits ends baton with its status.",
                    ),
                    p(
                        "Units: baton-run@.socket and baton-run@.service, one instance per \
                       application (README: Run a server written in another language).",
                    ),
                ],
                sections: vec![
                    (
                        "EXIT STATUS",
                        vec![terms(&[
                            (
                                "the command's",
                                "After a stop, or when the serving command exited on its own \
                                 (128 + the signal that ended it).",
                            ),
                            ("64", "Usage: a bad option or no COMMAND."),
                            (
                                "69",
                                "The first command was not ready in time (or exited 0 first).",
                            ),
                            ("78", "A bad listen address, or COMMAND not found."),
                        ])],
                    ),
                    ("SEE ALSO", see_also("baton-run")),
                ],
                options: true,
                commands: false,
            },
        ])
    }

    fn baton_description() -> Vec<Block> {
        vec![
            p("baton serves HTTP/1.1 and cleartext HTTP/2 (tokio and hyper) and is made to run \
               under systemd. On SIGHUP (systemctl reload baton) it starts the binary on disk \
               again — after a package upgrade, the new one — hands it the listening sockets, \
               waits until that successor serves, then stops accepting, finishes the requests in \
               flight and exits 0. Not one connection is refused or reset on the way. If the \
               successor fails or hangs, it is ended and the old process serves on."),
            p("Without a subcommand baton serves, as baton serve does (see baton-serve(1)). \
               baton reload triggers a reload and waits for its outcome (baton-reload(1)); baton \
               check validates the configuration (baton-check(1))."),
            p("The built-in handler answers every request with 200 and the configured \
               response_body (\"Hello, world!\"). Programs that serve their own axum or tower \
               application use baton as a Rust library instead (baton_server::serve)."),
            p("Listening sockets come, in this order, from systemd socket activation (LISTEN_FDS), \
               from a running predecessor through the hand-off socket, or from a fresh bind of the \
               configured addresses. Host names in listen addresses are resolved at start and \
               every address they resolve to is bound; a reload keeps the sockets."),
        ]
    }

    fn serve_description() -> Vec<Block> {
        vec![
            p(
                "Serves HTTP on the configured listeners until SIGTERM or SIGINT, then drains and \
               exits 0. SIGHUP hands the listeners to a fresh process running the binary on disk \
               (with the same arguments; it re-reads the configuration file) and retires this \
               one once the successor serves.",
            ),
            p(
                "With nothing configured it listens on 127.0.0.1:8000. Under socket activation \
               with no listen address configured it serves exactly what systemd passed. \
               Options override BATON_* variables, which override the JSON file, which \
               overrides the defaults.",
            ),
            p(
                "Draining: the process stops accepting (the successor accepts on the same \
               sockets), answers further HTTP/1 requests with Connection: close, closes \
               connections that stay idle for one second, sends GOAWAY on HTTP/2, and exits at \
               the latest after shutdown_timeout.",
            ),
        ]
    }

    fn reload_description() -> Vec<Block> {
        vec![
            p(
                "Validates the configuration first (like baton check), then sends SIGHUP to the \
               running main process — --pid, else $MAINPID, else the pid file — and waits until \
               the outcome of that hand-off is known. It prints \"reloaded: OLD -> NEW\" once the \
               successor serves, or the successor's error when the reload failed, in which case \
               the old process serves on.",
            ),
            p(
                "The packaged baton.service runs it as ExecReload=, so systemctl reload baton \
               fails visibly when the new binary or configuration cannot serve.",
            ),
        ]
    }

    fn configuration_file() -> Vec<Block> {
        vec![
            p("A JSON object, given with --config (the packages use /etc/baton/baton.json). \
               Every field is optional and unknown fields are rejected. Every successor re-reads \
               it: edit it, then systemctl reload baton. Durations are written \"30s\", \"500ms\", \
               \"2m\" or as a number of seconds."),
            terms(&[
                ("listen", "List of listen addresses (see --listen). Leave it out under socket activation."),
                ("handoff_socket", "Path of the hand-off socket."),
                ("shutdown_timeout", "Drain budget (default \"30s\")."),
                ("child_timeout", "How long a successor may take to serve (default \"10s\")."),
                ("pid_file", "Written by the process that is main."),
                ("response_body", "The body the built-in handler answers (default \"Hello, world!\")."),
                ("supervise", "Stay as a stable parent of every generation (default false; always on as PID 1)."),
                ("access_log", "Log every request (default false)."),
            ]),
        ]
    }

    fn signals() -> Vec<Block> {
        vec![terms(&[
            (
                "SIGHUP",
                "Hand off to a successor: one at a time; a SIGHUP during a hand-off is logged and \
                 ignored. Started from a terminal, the successor is not the shell's child: the \
                 prompt returns when the old process exits, and Ctrl-C no longer reaches the \
                 successor (stop it with kill PID or baton's pid file).",
            ),
            (
                "SIGTERM, SIGINT",
                "Stop: STOPPING=1, stop accepting, finish the requests in flight, exit 0 within \
                 shutdown_timeout. During a hand-off the successor is ended too.",
            ),
        ])]
    }

    fn systemd() -> Vec<Block> {
        vec![p(
            "baton tells systemd what happens through sd_notify: READY=1 and STATUS= (the \
                version, the addresses, the generation and the number of open connections, \
                refreshed every few seconds) once serving; RELOADING=1 and MAINPID=<successor> \
                during a reload, after which the successor sends READY=1; READY=1 with \
                STATUS=reload failed: … when a reload failed; STOPPING=1 on a stop; WATCHDOG=1 \
                when WatchdogSec= is set.",
        )]
    }

    fn logging() -> Vec<Block> {
        vec![p(
            "Log lines go to standard error: to journald, with structured fields (PID, \
                GENERATION, LISTENER, SOURCE…), when standard error is the journal; readable \
                lines otherwise; one JSON object per line with --log-format json. RUST_LOG \
                filters them (RUST_LOG=debug). With --access-log every request adds one entry \
                (target baton::access) with METHOD, PATH, STATUS, BYTES, DURATION_US, PEER and \
                GENERATION; status 0 means the request ended before a response.",
        )]
    }

    fn environment(cmd: &clap::Command) -> Vec<Block> {
        let mut items: Vec<(String, String)> = Vec::new();
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                let long = arg.get_long().unwrap_or_default();
                items.push((
                    env.to_string_lossy().into_owned(),
                    format!("Same as --{long}."),
                ));
            }
        }
        for (name, meaning) in [
            (
                "LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES",
                "Socket activation (sd_listen_fds): the descriptors from 3 on are served when \
                 LISTEN_PID is baton's pid.",
            ),
            (
                "BATON_LISTEN_FDS_WITHOUT_PID",
                "Set to 1 to serve LISTEN_FDS even without LISTEN_PID, as tools like systemfd \
                 --no-pid pass them through cargo run. Without it such descriptors are ignored \
                 with a warning.",
            ),
            (
                "NOTIFY_SOCKET",
                "Where sd_notify messages go; unset outside systemd.",
            ),
            (
                "WATCHDOG_USEC, WATCHDOG_PID",
                "The watchdog interval set by WatchdogSec=.",
            ),
            (
                "RUNTIME_DIRECTORY, XDG_RUNTIME_DIR, TMPDIR",
                "Decide the default hand-off socket path.",
            ),
            (
                "JOURNAL_STREAM",
                "Tells baton that standard error is the journal.",
            ),
            ("RUST_LOG", "Log filter (default info)."),
        ] {
            items.push((name.into(), meaning.into()));
        }
        vec![Block::Terms(items)]
    }

    fn files() -> Vec<Block> {
        vec![terms(&[
            (
                "/etc/baton/baton.json",
                "The configuration file of the packaged service.",
            ),
            (
                "/usr/lib/systemd/system/baton.service, baton.socket",
                "The packaged units (on Debian under /lib/systemd/system). The socket owns the \
                 listening address (127.0.0.1:8000): change it with systemctl edit baton.socket.",
            ),
            (
                "/run/baton/handoff.sock",
                "The hand-off socket of the packaged service; it exists only during a hand-off. \
                 Its directory is created 0700.",
            ),
            (
                "/run/baton/reload-status.json",
                "The outcome of the last hand-off, beside the hand-off socket.",
            ),
            (
                "/run/baton/baton.pid",
                "The pid file of the packaged service.",
            ),
        ])]
    }

    fn exit_status() -> Vec<Block> {
        vec![terms(&[
            ("0", "Stopped or retired normally."),
            ("64", "Usage: a bad option."),
            ("69", "An address is in use."),
            ("71", "An operating-system error."),
            ("76", "The predecessor broke the hand-off protocol."),
            (
                "77",
                "Permission denied (binding a privileged port, a socket path).",
            ),
            (
                "78",
                "Bad configuration: a setting, a listen address, a host name that does not \
                 resolve, socket-activation variables. One line names what and where.",
            ),
        ])]
    }

    fn see_also(this: &str) -> Vec<Block> {
        let pages: Vec<String> = [
            "baton",
            "baton-serve",
            "baton-reload",
            "baton-check",
            "baton-run",
        ]
        .iter()
        .filter(|p| **p != this)
        .map(|p| format!("{p}(1)"))
        .chain(
            [
                "systemctl(1)",
                "journalctl(1)",
                "systemd.socket(5)",
                "systemd.service(5)",
            ]
            .map(str::to_owned),
        )
        .collect();
        vec![Block::P(pages.join(", "))]
    }
}
