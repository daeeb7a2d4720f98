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
//! [`exposure`] decides, from the key file's permissions, whether someone besides this process
//! (and the file's owner) can read the key:
//! - every local user, when others may read it (`o+r`): always reported;
//! - another user named in the file's POSIX ACL (`setfacl -m u:NAME:r`);
//! - a group, by the group bits (`g+r`) or a named ACL group, unless this process reads the
//!   file through that group: it is neither root nor the owner nor named in the ACL, and is a
//!   member (the `ssl-cert` group pattern).
//!
//! The ACL is read because the group bits of a file with an ACL show its mask, not its group:
//! systemd writes each credential `0400` and grants the service's user read access by an ACL,
//! so such a file shows `0440` yet only that user can read it.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::os::fd::AsRawFd;
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
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Who may read it, from the mode or the POSIX ACL.
    pub access: ReadAccess,
    /// It has a POSIX access ACL.
    pub acl: bool,
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
    // O_NONBLOCK open and a file-type check, as for the configuration file: a FIFO or a device
    // named as a certificate or key must not block `baton check` or a starting server.
    let file = crate::safe_fs::open_regular_for_reading(path).map_err(|e| match e {
        crate::safe_fs::FsError::Io { source, .. } => read_err(source),
        crate::safe_fs::FsError::Unsafe { problem, .. } => TlsError::NotAFile {
            role,
            path: path.to_owned(),
            what: problem,
        },
    })?;
    let meta = file.metadata().map_err(read_err)?;
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_FILE_BYTES) as usize);
    (&file)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(TlsError::TooLarge {
            role,
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    let acl = posix_acl(&file).and_then(|xattr| ReadAccess::from_acl(&xattr));
    Ok(FileData {
        bytes,
        mode,
        acl: acl.is_some(),
        access: acl.unwrap_or_else(|| ReadAccess::from_mode(mode)),
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// The extended attribute holding a file's POSIX access ACL, when it has one (`None` also for
/// file systems without ACLs).
fn posix_acl(file: &std::fs::File) -> Option<Vec<u8>> {
    // 4 + 8 bytes per entry: 511 entries.
    let mut buf = vec![0u8; 4096];
    // libc: nix has no extended-attribute calls.
    // SAFETY: the descriptor is open (borrowed from `file` for the call); the name is a
    // NUL-terminated string; the kernel writes at most `buf.len()` bytes into `buf`, which is
    // ours and outlives the call.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            c"system.posix_acl_access".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Who is granted read access to a file, besides its owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadAccess {
    /// Every other user (`o+r`).
    pub other: bool,
    /// The file's group (`g+r`, or the ACL's group entry under its mask).
    pub owning_group: bool,
    /// Users named in the ACL with read access under the mask.
    pub users: Vec<u32>,
    /// Groups named in the ACL with read access under the mask.
    pub groups: Vec<u32>,
}

impl ReadAccess {
    /// From permission bits alone (a file without an ACL).
    pub fn from_mode(mode: u32) -> ReadAccess {
        ReadAccess {
            other: mode & 0o004 != 0,
            owning_group: mode & 0o040 != 0,
            ..ReadAccess::default()
        }
    }

    /// From the `system.posix_acl_access` attribute (version 2, then 8-byte entries: tag,
    /// permissions, id, little-endian); `None` when it is not that.
    pub fn from_acl(xattr: &[u8]) -> Option<ReadAccess> {
        const USER: u16 = 0x02;
        const GROUP_OBJ: u16 = 0x04;
        const GROUP: u16 = 0x08;
        const MASK: u16 = 0x10;
        const OTHER: u16 = 0x20;
        const READ: u16 = 0x04;
        let (version, entries) = xattr.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*version) != 2 || entries.len() % 8 != 0 {
            return None;
        }
        let (mut mask, mut group_obj, mut other) = (0o7, 0, 0);
        let (mut users, mut groups) = (Vec::new(), Vec::new());
        for e in entries.chunks_exact(8) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            match tag {
                USER => users.push((id, perm)),
                GROUP_OBJ => group_obj = perm,
                GROUP => groups.push((id, perm)),
                MASK => mask = perm,
                OTHER => other = perm,
                _ => {}
            }
        }
        let reads = |perm: u16| perm & mask & READ != 0;
        Some(ReadAccess {
            other: other & READ != 0, // the mask does not apply to others
            owning_group: reads(group_obj),
            users: users
                .into_iter()
                .filter(|(_, p)| reads(*p))
                .map(|(id, _)| id)
                .collect(),
            groups: groups
                .into_iter()
                .filter(|(_, p)| reads(*p))
                .map(|(id, _)| id)
                .collect(),
        })
    }
}

/// Who besides this process (and the file's owner) can read a private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// `o+r`: every local user.
    Everyone,
    /// Another user, named in the ACL.
    User {
        /// The user.
        uid: u32,
        /// Their name, when the user database knows it.
        name: Option<String>,
    },
    /// A group, and this process does not read the file through it.
    Group {
        /// The group.
        gid: u32,
        /// Its name, when the group database knows it.
        name: Option<String>,
    },
}

/// Whether a key file with `access`, owned by `file_uid`:`file_gid`, is readable by others than
/// its owner and a process running as `euid` with groups `groups` (effective and
/// supplementary). See the module docs for the rule; the most exposed reader is reported.
pub fn exposure(
    access: &ReadAccess,
    file_uid: u32,
    file_gid: u32,
    euid: u32,
    groups: &[u32],
) -> Option<Exposure> {
    if access.other {
        return Some(Exposure::Everyone);
    }
    if let Some(uid) = access.users.iter().find(|u| **u != euid && **u != file_uid) {
        return Some(Exposure::User {
            uid: *uid,
            name: None,
        });
    }
    let reads_otherwise = euid == 0 || euid == file_uid || access.users.contains(&euid);
    let needed = |gid: &u32| !reads_otherwise && groups.contains(gid);
    let owning = Some(file_gid).filter(|_| access.owning_group);
    let gid = owning
        .iter()
        .chain(access.groups.iter())
        .find(|gid| !needed(gid))?;
    Some(Exposure::Group {
        gid: *gid,
        name: None,
    })
}

/// [`exposure`] for a file this process read, with user and group names looked up.
pub fn exposure_of(file: &FileData) -> Option<Exposure> {
    use nix::unistd::{getegid, geteuid, getgroups, Gid, Group, Uid, User};
    let mut groups: Vec<u32> = getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    groups.push(getegid().as_raw());
    match exposure(
        &file.access,
        file.uid,
        file.gid,
        geteuid().as_raw(),
        &groups,
    )? {
        Exposure::User { uid, .. } => Some(Exposure::User {
            uid,
            name: User::from_uid(Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name),
        }),
        Exposure::Group { gid, .. } => Some(Exposure::Group {
            gid,
            name: Group::from_gid(Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name),
        }),
        Exposure::Everyone => Some(Exposure::Everyone),
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
        let mode = |m| ReadAccess::from_mode(m);
        // owner-only
        assert_eq!(exposure(&mode(0o600), me, 1000, me, &groups), None);
        assert_eq!(exposure(&mode(0o400), me, 1000, me, &groups), None);
        // world-readable, whoever owns it
        assert_eq!(
            exposure(&mode(0o644), me, 1000, me, &groups),
            Some(Exposure::Everyone)
        );
        assert_eq!(
            exposure(&mode(0o604), 0, 0, 0, &[0]),
            Some(Exposure::Everyone)
        );
        // group-readable: needed when we read it through the group (ssl-cert pattern) ...
        assert_eq!(exposure(&mode(0o640), 0, 110, me, &groups), None);
        // ... not when we own it, are root, or are not in the group (then others in it read it)
        let group = Some(Exposure::Group {
            gid: 110,
            name: None,
        });
        assert_eq!(exposure(&mode(0o640), me, 110, me, &groups), group);
        assert_eq!(exposure(&mode(0o640), 0, 110, 0, &[0]), group);
        assert_eq!(exposure(&mode(0o640), 5, 110, me, &[1000]), group);
    }

    /// `system.posix_acl_access` bytes for `entries` of (tag, perm, id).
    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut bytes = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            bytes.extend(tag.to_le_bytes());
            bytes.extend(perm.to_le_bytes());
            bytes.extend(id.to_le_bytes());
        }
        bytes
    }

    const NONE: u32 = u32::MAX;

    #[test]
    fn an_acl_decides_instead_of_the_group_bits() {
        let me = 998;
        // what systemd writes for LoadCredential= with User=: root 0400 + user:me:r (shows 0440)
        let cred = ReadAccess::from_acl(&acl(&[
            (0x01, 4, NONE),
            (0x02, 4, me),
            (0x04, 0, NONE),
            (0x10, 4, NONE),
            (0x20, 0, NONE),
        ]))
        .unwrap();
        assert!(!cred.owning_group && !cred.other);
        assert_eq!(cred.users, [me]);
        assert_eq!(exposure(&cred, 0, 0, me, &[me]), None);
        // ... but someone else named in it is reported
        assert_eq!(
            exposure(&cred, 0, 0, 1234, &[1234]),
            Some(Exposure::User {
                uid: me,
                name: None
            })
        );
        // a named group, masked out or not
        let masked = ReadAccess::from_acl(&acl(&[
            (0x01, 6, NONE),
            (0x04, 0, NONE),
            (0x08, 4, 110),
            (0x10, 0, NONE),
            (0x20, 0, NONE),
        ]))
        .unwrap();
        assert_eq!(masked, ReadAccess::default());
        let named = ReadAccess::from_acl(&acl(&[
            (0x01, 6, NONE),
            (0x04, 0, NONE),
            (0x08, 4, 110),
            (0x10, 4, NONE),
            (0x20, 0, NONE),
        ]))
        .unwrap();
        assert_eq!(exposure(&named, 0, 0, me, &[me, 110]), None); // we read through it
        assert_eq!(
            exposure(&named, me, 0, me, &[me, 110]),
            Some(Exposure::Group {
                gid: 110,
                name: None
            })
        );
        // others are not masked
        let other = ReadAccess::from_acl(&acl(&[(0x10, 0, NONE), (0x20, 4, NONE)])).unwrap();
        assert_eq!(exposure(&other, 0, 0, 0, &[0]), Some(Exposure::Everyone));
        // not an ACL
        assert_eq!(ReadAccess::from_acl(b""), None);
        assert_eq!(ReadAccess::from_acl(&[1, 0, 0, 0]), None);
        assert_eq!(ReadAccess::from_acl(&[2, 0, 0, 0, 1]), None);
    }

    #[test]
    fn a_real_acl_like_systemds_credentials_is_read() {
        let (_dir, path) = crate::test_util::temp_path("tls.key");
        std::fs::write(&path, b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let value = acl(&[
            (0x01, 4, NONE),
            (0x02, 4, 65534),
            (0x04, 0, NONE),
            (0x10, 4, NONE),
            (0x20, 0, NONE),
        ]);
        let file = std::fs::File::open(&path).unwrap();
        // libc: nix has no extended-attribute calls.
        // SAFETY: a valid fd, a NUL-terminated name, and a buffer of the length given.
        let rc = unsafe {
            libc::fsetxattr(
                file.as_raw_fd(),
                c"system.posix_acl_access".as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            crate::test_util::skip(&format!("this file system takes no ACL: {e}"));
            return;
        }
        let data = read(Role::Key, &path).unwrap();
        assert_eq!(data.mode, 0o440, "the group bits show the mask");
        assert!(data.acl);
        assert_eq!(data.access.users, [65534]);
        assert!(!data.access.owning_group);
        // we (root, the owner here) are not the user it names: that user is reported
        if nix::unistd::geteuid().as_raw() != 65534 {
            assert!(matches!(
                exposure_of(&data),
                Some(Exposure::User { uid: 65534, .. })
            ));
        }
        // and for the user it names (the service), nobody else
        assert_eq!(exposure(&data.access, 0, 0, 65534, &[65534]), None);
    }

    #[test]
    fn reading_names_the_file_and_the_problem() {
        let (dir, missing) = crate::test_util::temp_path("nope.pem");
        let e = read(Role::Certificate, &missing).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("tls certificate {}: no such file", missing.display())
        );
        let e = read(Role::Key, dir.path()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "tls key {}: is a directory, not a regular file",
                dir.path().display()
            )
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

    #[test]
    fn a_group_readable_key_names_the_group() {
        if !crate::test_util::root_for("giving a key to another group") {
            return;
        }
        let group = nix::unistd::Group::from_name("nogroup")
            .unwrap()
            .expect("the group nogroup (Debian has it)");
        let (_dir, key) = crate::test_util::temp_path("k.pem");
        std::fs::write(&key, b"x").unwrap();
        nix::unistd::chown(&key, None, Some(group.gid)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        // root reads it as its owner: the group bit only serves the members of nogroup
        assert_eq!(
            exposure_of(&read(Role::Key, &key).unwrap()),
            Some(Exposure::Group {
                gid: group.gid.as_raw(),
                name: Some("nogroup".into())
            })
        );
    }
}
