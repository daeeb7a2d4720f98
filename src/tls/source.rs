//! Where the certificate and key files are, and reading them.
//!
//! # Credentials the systemd way
//!
//! A unit can pass files with `LoadCredential=NAME:/path` (or `SetCredential=`, or
//! `LoadCredentialEncrypted=`); systemd copies them into a private directory, readable only by the
//! service's user, and names it in `$CREDENTIALS_DIRECTORY`. The rule that finds them:
//!
//! 1. `credential:NAME` is the file `NAME` in `$CREDENTIALS_DIRECTORY`. `NAME` is a plain file
//!    name (no `/`, not `.` or `..`); it is an error when `$CREDENTIALS_DIRECTORY` is not set.
//! 2. A bare file name (no `/` at all, e.g. `tls.key`) is looked up in `$CREDENTIALS_DIRECTORY`
//!    when that is set, because credential names never contain a `/`.
//! 3. Anything else is a path, relative to the working directory when not absolute (write
//!    `./tls.key` for a file in the working directory while credentials are set).
//!
//! The directory is read from the environment once, by [`CredentialsDir::from_process`]; a
//! successor inherits the variable, so every generation resolves the same names.
//!
//! # A private key others can read
//!
//! [`exposure`] decides, from the key file's mode and owner, whether someone besides this
//! process can read the key: a key readable by every user (`o+r`) always is; a group-readable
//! key (`g+r`) is, unless this process needs the group to read it (it is neither root nor the
//! file's owner, and the file's group is one of its groups: the `ssl-cert` group pattern).

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::TlsError;

/// The prefix that names a credential: `credential:NAME`.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// Certificate and key files larger than this are refused (a chain is a few KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Which of the two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The certificate chain, leaf first.
    Certificate,
    /// The private key.
    Key,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Certificate => "certificate",
            Role::Key => "key",
        })
    }
}

/// `$CREDENTIALS_DIRECTORY`, as found in the environment (an empty value counts as unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialsDir(pub Option<PathBuf>);

impl CredentialsDir {
    /// Read `$CREDENTIALS_DIRECTORY` from this process's environment (read only).
    pub fn from_process() -> Self {
        CredentialsDir(
            std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        )
    }

    /// The file to read for a configured certificate or key, by the rule in the module docs.
    pub fn resolve(&self, role: Role, configured: &Path) -> Result<PathBuf, TlsError> {
        let credential_err = |problem: String| TlsError::Credential {
            role,
            configured: configured.display().to_string(),
            problem,
        };
        if let Some(name) = credential_name(configured) {
            check_credential_name(name).map_err(|p| credential_err(p.to_owned()))?;
            return match &self.0 {
                Some(dir) => Ok(dir.join(name)),
                None => Err(credential_err(
                    "$CREDENTIALS_DIRECTORY is not set (pass the file with LoadCredential= in the unit)"
                        .to_owned(),
                )),
            };
        }
        match &self.0 {
            Some(dir) if is_bare_name(configured) => Ok(dir.join(configured)),
            _ => Ok(configured.to_owned()),
        }
    }
}

/// Check the syntax of a configured certificate or key path without looking at the environment
/// or the file system: what the configuration validates. `Err` is the problem.
pub fn validate_configured(configured: &Path) -> Result<(), &'static str> {
    if configured.as_os_str().is_empty() {
        return Err("empty path");
    }
    match credential_name(configured) {
        Some(name) => check_credential_name(name),
        None => Ok(()),
    }
}

/// `NAME` when `configured` is `credential:NAME`.
fn credential_name(configured: &Path) -> Option<&OsStr> {
    configured
        .as_os_str()
        .as_bytes()
        .strip_prefix(CREDENTIAL_PREFIX.as_bytes())
        .map(OsStr::from_bytes)
}

fn check_credential_name(name: &OsStr) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err("missing credential name after credential:");
    }
    if bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
        return Err("a credential name is a plain file name (no /, not . or ..)");
    }
    Ok(())
}

fn is_bare_name(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    !bytes.is_empty() && !bytes.contains(&b'/') && bytes != b"." && bytes != b".."
}

/// A file's contents and the facts about it that matter.
#[derive(Debug)]
pub struct FileData {
    /// The path read.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Read a certificate or key file (symbolic links are followed: certbot's `live/` directory is
/// made of them). Mode and owner come from the open descriptor, so they describe what was read.
pub fn read(role: Role, path: &Path) -> Result<FileData, TlsError> {
    let read_err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TlsError::Missing {
                role,
                path: path.to_owned(),
            }
        } else {
            TlsError::Read {
                role,
                path: path.to_owned(),
                source,
            }
        }
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(TlsError::NotAFile {
            role,
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_FILE_BYTES) as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(TlsError::TooLarge {
            role,
            path: path.to_owned(),
        });
    }
    Ok(FileData {
        path: path.to_owned(),
        bytes,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Who besides this process can read a private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// `o+r`: every local user.
    Everyone,
    /// `g+r`, and this process does not read the file through that group.
    Group {
        /// The file's group.
        gid: u32,
        /// Its name, when the group database knows it.
        name: Option<String>,
    },
}

/// Whether a key file with `mode`, owned by `file_uid`:`file_gid`, is readable by others than a
/// process running as `euid` with groups `groups` (effective and supplementary). See the module
/// docs for the rule.
pub fn exposure(
    mode: u32,
    file_uid: u32,
    file_gid: u32,
    euid: u32,
    groups: &[u32],
) -> Option<Exposure> {
    if mode & 0o004 != 0 {
        return Some(Exposure::Everyone);
    }
    let reads_through_group = euid != 0 && euid != file_uid && groups.contains(&file_gid);
    if mode & 0o040 != 0 && !reads_through_group {
        return Some(Exposure::Group {
            gid: file_gid,
            name: None,
        });
    }
    None
}

/// [`exposure`] for a file this process read, with the group's name looked up.
pub fn exposure_of(file: &FileData) -> Option<Exposure> {
    let euid = nix::unistd::geteuid().as_raw();
    let mut groups: Vec<u32> = nix::unistd::getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    groups.push(nix::unistd::getegid().as_raw());
    match exposure(file.mode, file.uid, file.gid, euid, &groups)? {
        Exposure::Group { gid, .. } => Some(Exposure::Group {
            gid,
            name: nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name),
        }),
        e => Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(dir: Option<&str>) -> CredentialsDir {
        CredentialsDir(dir.map(PathBuf::from))
    }

    #[test]
    fn credential_prefix_reads_the_credentials_directory() {
        let c = creds(Some("/run/credentials/baton.service"));
        assert_eq!(
            c.resolve(Role::Key, Path::new("credential:tls.key"))
                .unwrap(),
            Path::new("/run/credentials/baton.service/tls.key")
        );
        let e = creds(None)
            .resolve(Role::Key, Path::new("credential:tls.key"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tls key credential:tls.key: $CREDENTIALS_DIRECTORY is not set (pass the file with LoadCredential= in the unit)"
        );
        for bad in [
            "credential:",
            "credential:a/b",
            "credential:..",
            "credential:.",
        ] {
            let e = c.resolve(Role::Certificate, Path::new(bad)).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("tls certificate {bad}: ")),
                "{e}"
            );
            assert!(validate_configured(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn bare_names_are_credentials_only_when_the_directory_is_set() {
        let c = creds(Some("/run/cred"));
        let r = |c: &CredentialsDir, p: &str| c.resolve(Role::Key, Path::new(p)).unwrap();
        assert_eq!(r(&c, "tls.key"), Path::new("/run/cred/tls.key"));
        assert_eq!(r(&c, "./tls.key"), Path::new("./tls.key"));
        assert_eq!(r(&c, "keys/tls.key"), Path::new("keys/tls.key"));
        assert_eq!(r(&c, "/etc/tls.key"), Path::new("/etc/tls.key"));
        assert_eq!(r(&creds(None), "tls.key"), Path::new("tls.key"));
        assert!(validate_configured(Path::new("")).is_err());
        assert!(validate_configured(Path::new("tls.key")).is_ok());
    }

    #[test]
    fn who_else_can_read_a_key() {
        let me = 1000;
        let groups = [1000, 110];
        // owner-only
        assert_eq!(exposure(0o600, me, 1000, me, &groups), None);
        assert_eq!(exposure(0o400, me, 1000, me, &groups), None);
        // world-readable, whoever owns it
        assert_eq!(
            exposure(0o644, me, 1000, me, &groups),
            Some(Exposure::Everyone)
        );
        assert_eq!(exposure(0o604, 0, 0, 0, &[0]), Some(Exposure::Everyone));
        // group-readable: needed when we read it through the group (ssl-cert pattern) ...
        assert_eq!(exposure(0o640, 0, 110, me, &groups), None);
        // ... not when we own it, are root, or are not in the group (then others in it read it)
        let group = Some(Exposure::Group {
            gid: 110,
            name: None,
        });
        assert_eq!(exposure(0o640, me, 110, me, &groups), group);
        assert_eq!(exposure(0o640, 0, 110, 0, &[0]), group);
        assert_eq!(exposure(0o640, 5, 110, me, &[1000]), group);
    }

    #[test]
    fn reading_names_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = read(Role::Certificate, &missing).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("tls certificate {}: no such file", missing.display())
        );
        let e = read(Role::Key, dir.path()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("tls key {}: not a regular file", dir.path().display())
        );
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = read(Role::Key, &big).unwrap_err().to_string();
        assert!(e.ends_with("larger than 1 MiB"), "{e}");
        let ok = dir.path().join("k.pem");
        std::fs::write(&ok, b"x").unwrap();
        let link = dir.path().join("live.pem");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o644)).unwrap();
        let data = read(Role::Key, &link).unwrap();
        assert_eq!((data.bytes.as_slice(), data.mode), (&b"x"[..], 0o644));
        assert_eq!(exposure_of(&data), Some(Exposure::Everyone));
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposure_of(&read(Role::Key, &ok).unwrap()), None);
    }
}
