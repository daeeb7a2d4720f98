//! What `baton check` says about the certificate and key: the pair loads and matches (or the
//! [`TlsError`] why not), and warnings that do not stop serving: the leaf expired, expires within
//! [`EXPIRY_WARNING`] or is not valid yet, the key is readable by others.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;

use super::source::Exposure;
use super::{CredentialsDir, Pair, TlsError, TlsFiles};

/// A leaf expiring within this is warned about.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// What the leaf certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// `notBefore`, seconds since the epoch (negative before 1970).
    pub not_before: i64,
    /// `notAfter`, seconds since the epoch.
    pub not_after: i64,
    /// The DNS names and IP addresses of subjectAltName, else the subject.
    pub names: Vec<String>,
    /// The serial number, colon-separated hex bytes.
    pub serial: String,
}

impl Leaf {
    /// Parse a DER certificate; `Err` is the parser's complaint.
    pub fn parse(der: &CertificateDer<'_>) -> Result<Leaf, String> {
        let facts = super::x509::parse(der)?;
        let mut names = facts.alt_names;
        if names.is_empty() {
            names = facts
                .common_names
                .into_iter()
                .map(|cn| format!("CN={cn}"))
                .collect();
        }
        if names.is_empty() {
            names.push("(no name)".to_owned());
        }
        Ok(Leaf {
            not_before: facts.not_before,
            not_after: facts.not_after,
            names,
            serial: facts.serial,
        })
    }

    /// The names, comma-separated, at most four and a count of the rest.
    pub fn names(&self) -> String {
        let mut text = self
            .names
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if self.names.len() > 4 {
            text.push_str(&format!(" and {} more", self.names.len() - 4));
        }
        text
    }
}

/// One thing `baton check` reports about TLS, printed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The pair loads and the key matches the leaf.
    Valid {
        /// The certificate file read.
        cert: PathBuf,
        /// The key file read.
        key: PathBuf,
        /// Certificates in the chain, the leaf included.
        chain: usize,
        /// The leaf.
        leaf: Leaf,
    },
    /// The leaf's `notAfter` has passed.
    Expired {
        /// The certificate file.
        cert: PathBuf,
        /// `notAfter`, seconds since the epoch.
        not_after: i64,
        /// Whole days since.
        days: u64,
    },
    /// The leaf's `notAfter` is within [`EXPIRY_WARNING`].
    ExpiresSoon {
        /// The certificate file.
        cert: PathBuf,
        /// `notAfter`, seconds since the epoch.
        not_after: i64,
        /// Whole days left.
        days: u64,
    },
    /// The leaf's `notBefore` is still to come.
    NotYetValid {
        /// The certificate file.
        cert: PathBuf,
        /// `notBefore`, seconds since the epoch.
        not_before: i64,
    },
    /// The private key file is readable by others than baton.
    KeyReadable {
        /// The key file.
        key: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// It has a POSIX ACL (then the group bits show the ACL's mask).
        acl: bool,
        /// Who can read it.
        by: Exposure,
    },
}

impl Finding {
    /// True for everything but [`Finding::Valid`]: the operator should act, serving goes on.
    pub fn is_warning(&self) -> bool {
        !matches!(self, Finding::Valid { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Valid {
                cert,
                key,
                chain,
                leaf,
            } => write!(
                f,
                "tls certificate {} and key {} match: {} ({} in the chain), valid until {}",
                cert.display(),
                key.display(),
                leaf.names(),
                chain,
                utc(leaf.not_after)
            ),
            Finding::Expired {
                cert,
                not_after,
                days,
            } => write!(
                f,
                "tls certificate {}: the leaf expired {} ({} ago)",
                cert.display(),
                utc(*not_after),
                days_text(*days)
            ),
            Finding::ExpiresSoon {
                cert,
                not_after,
                days,
            } => write!(
                f,
                "tls certificate {}: the leaf expires {} (in {})",
                cert.display(),
                utc(*not_after),
                days_text(*days)
            ),
            Finding::NotYetValid { cert, not_before } => write!(
                f,
                "tls certificate {}: the leaf is not valid before {}",
                cert.display(),
                utc(*not_before)
            ),
            Finding::KeyReadable { key, mode, acl, by } => {
                let acl = if *acl { " and its ACL" } else { "" };
                write!(f, "tls key {}: mode {mode:04o}{acl} lets ", key.display())?;
                match by {
                    Exposure::Everyone => f.write_str("every local user read it")?,
                    Exposure::User { uid, name: Some(n) } => {
                        write!(f, "user {n} (uid {uid}) read it")?
                    }
                    Exposure::User { uid, name: None } => write!(f, "user {uid} read it")?,
                    Exposure::Group { gid, name: Some(n) } => {
                        write!(f, "group {n} (gid {gid}) read it")?
                    }
                    Exposure::Group { gid, name: None } => write!(f, "group {gid} read it")?,
                }
                f.write_str(" (chmod 600, or pass it with LoadCredential=)")
            }
        }
    }
}

fn days_text(days: u64) -> String {
    match days {
        0 => "less than a day".to_owned(),
        1 => "1 day".to_owned(),
        n => format!("{n} days"),
    }
}

/// Validate the pair for `baton check`: `Err` when serving would fail, else a
/// [`Finding::Valid`] followed by the warnings at `now`. The server configuration is built too,
/// so everything a serving process does with the files is exercised.
pub fn check(
    files: &TlsFiles,
    creds: &CredentialsDir,
    now: SystemTime,
) -> Result<Vec<Finding>, TlsError> {
    let pair = Pair::read(files, creds)?;
    pair.server_config()?;
    let mut findings = vec![Finding::Valid {
        cert: pair.cert_path.clone(),
        key: pair.key_path.clone(),
        chain: pair.certified.cert.len(),
        leaf: pair.leaf.clone(),
    }];
    findings.extend(warnings(&pair, now));
    Ok(findings)
}

/// The warnings about `pair` at `now` (see [`Pair::warnings`]).
pub(super) fn warnings(pair: &Pair, now: SystemTime) -> Vec<Finding> {
    let mut found = Vec::new();
    if let Some(by) = &pair.key_exposure {
        found.push(Finding::KeyReadable {
            key: pair.key_path.clone(),
            mode: pair.key_mode,
            acl: pair.key_acl,
            by: by.clone(),
        });
    }
    found.extend(validity(&pair.cert_path, &pair.leaf, unix_seconds(now)));
    found
}

/// Expiry findings for a leaf at `now` (seconds since the epoch).
pub fn validity(cert: &std::path::Path, leaf: &Leaf, now: i64) -> Option<Finding> {
    const DAY: i64 = 24 * 3600;
    let cert = cert.to_owned();
    if leaf.not_after <= now {
        Some(Finding::Expired {
            cert,
            not_after: leaf.not_after,
            days: ((now - leaf.not_after) / DAY) as u64,
        })
    } else if leaf.not_after - now <= EXPIRY_WARNING.as_secs() as i64 {
        Some(Finding::ExpiresSoon {
            cert,
            not_after: leaf.not_after,
            days: ((leaf.not_after - now) / DAY) as u64,
        })
    } else if leaf.not_before > now {
        Some(Finding::NotYetValid {
            cert,
            not_before: leaf.not_before,
        })
    } else {
        None
    }
}

/// Seconds since the epoch (negative before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian, any year X.509
/// can hold).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date (H. Hinnant's algorithm, era of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_893_456_000 - 1), "2029-12-31 23:59:59 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(utc(253_402_300_799), "9999-12-31 23:59:59 UTC");
        assert_eq!(utc(-631_152_000), "1950-01-01 00:00:00 UTC");
    }

    #[test]
    fn expiry_thresholds() {
        let leaf = |not_before, not_after| Leaf {
            not_before,
            not_after,
            names: vec!["x".into()],
            serial: "01".into(),
        };
        let p = std::path::Path::new("/c.pem");
        let day = 86_400;
        let now = 1_000 * day;
        assert_eq!(validity(p, &leaf(0, now + 15 * day), now), None);
        let soon = validity(p, &leaf(0, now + 14 * day), now).unwrap();
        assert!(
            matches!(soon, Finding::ExpiresSoon { days: 14, .. }),
            "{soon:?}"
        );
        let soon = validity(p, &leaf(0, now + 3 * day + 5), now).unwrap();
        assert_eq!(
            soon.to_string(),
            format!(
                "tls certificate /c.pem: the leaf expires {} (in 3 days)",
                utc(now + 3 * day + 5)
            )
        );
        let gone = validity(p, &leaf(0, now), now).unwrap();
        assert!(matches!(gone, Finding::Expired { days: 0, .. }), "{gone:?}");
        let gone = validity(p, &leaf(0, now - 40 * day), now).unwrap();
        assert!(gone.to_string().ends_with("(40 days ago)"), "{gone}");
        let early = validity(p, &leaf(now + 1, now + 100 * day), now).unwrap();
        assert!(matches!(early, Finding::NotYetValid { .. }));
        assert!(early.is_warning());
    }
}
