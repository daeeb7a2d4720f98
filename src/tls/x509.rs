//! The few facts baton reads from its leaf certificate — validity, names, serial — from the DER
//! bytes, with a small reader of the X.509 structure (RFC 5280, section 4.1) instead of a full
//! certificate library: the certificate's validity as a whole is rustls' and webpki's business
//! (they parse it when the key is matched and at every handshake); this only reports.
//!
//! Only definite lengths and one-byte tags occur in X.509 DER; anything else is refused.

use std::net::{Ipv4Addr, Ipv6Addr};

/// What the leaf says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `notBefore`, seconds since the epoch.
    pub not_before: i64,
    /// `notAfter`, seconds since the epoch.
    pub not_after: i64,
    /// DNS names and IP addresses of subjectAltName, in order.
    pub alt_names: Vec<String>,
    /// The subject's common names (for a certificate without subjectAltName).
    pub common_names: Vec<String>,
    /// The serial number, as colon-separated hex bytes.
    pub serial: String,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0]` constructed: the version.
const VERSION: u8 = 0xa0;
/// `[3]` constructed: the extensions.
const EXTENSIONS: u8 = 0xa3;
/// GeneralName `[2]` dNSName and `[7]` iPAddress (primitive, implicit).
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;
/// 2.5.29.17, subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.4.3, commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// A cursor over DER bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.bytes.first().copied()
    }

    /// The next element: its tag and contents.
    fn any(&mut self) -> Result<(u8, &'a [u8]), String> {
        let (&tag, rest) = self
            .bytes
            .split_first()
            .ok_or("unexpected end of the certificate")?;
        if tag & 0x1f == 0x1f {
            return Err("a multi-byte tag".into());
        }
        let (&first, rest) = rest.split_first().ok_or("a length is missing")?;
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                if rest.len() < n {
                    return Err("a length is cut short".into());
                }
                let (digits, rest) = rest.split_at(n);
                let len = digits
                    .iter()
                    .fold(0usize, |acc, d| (acc << 8) | usize::from(*d));
                (len, rest)
            }
            _ => return Err("an indefinite or oversized length".into()),
        };
        if rest.len() < len {
            return Err("an element runs past the end".into());
        }
        let (value, rest) = rest.split_at(len);
        self.bytes = rest;
        Ok((tag, value))
    }

    /// The next element, which must have `tag`.
    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        match self.any()? {
            (t, value) if t == tag => Ok(value),
            (t, _) => Err(format!(
                "{what}: tag 0x{t:02x} where 0x{tag:02x} was expected"
            )),
        }
    }

    /// The next element if it has `tag`.
    fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, String> {
        if self.peek_tag() == Some(tag) {
            return self.any().map(|(_, v)| Some(v));
        }
        Ok(None)
    }
}

/// Read the facts from a DER certificate; `Err` says what is malformed.
pub fn parse(der: &[u8]) -> Result<Facts, String> {
    let mut outer = Reader::new(der);
    let certificate = outer.expect(SEQUENCE, "certificate")?;
    if !outer.is_empty() {
        return Err("bytes after the certificate".into());
    }
    let mut certificate = Reader::new(certificate);
    let mut tbs = Reader::new(certificate.expect(SEQUENCE, "tbsCertificate")?);
    tbs.optional(VERSION)?;
    let serial = tbs.expect(INTEGER, "serialNumber")?;
    if serial.is_empty() {
        return Err("serialNumber: empty".into());
    }
    tbs.expect(SEQUENCE, "signature")?;
    tbs.expect(SEQUENCE, "issuer")?;
    let mut validity = Reader::new(tbs.expect(SEQUENCE, "validity")?);
    let not_before = time(&mut validity, "notBefore")?;
    let not_after = time(&mut validity, "notAfter")?;
    let subject = tbs.expect(SEQUENCE, "subject")?;
    tbs.expect(SEQUENCE, "subjectPublicKeyInfo")?;
    let mut alt_names = Vec::new();
    while let Some(tag) = tbs.peek_tag() {
        let (_, value) = tbs.any()?;
        if tag == EXTENSIONS {
            alt_names = subject_alt_names(value)?;
        }
    }
    Ok(Facts {
        not_before,
        not_after,
        alt_names,
        common_names: common_names(subject)?,
        serial: serial
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    })
}

/// `[3] { SEQUENCE OF Extension { OID, BOOLEAN DEFAULT FALSE, OCTET STRING } }`: the names
/// of subjectAltName, if it is there.
fn subject_alt_names(explicit: &[u8]) -> Result<Vec<String>, String> {
    let mut wrapper = Reader::new(explicit);
    let mut extensions = Reader::new(wrapper.expect(SEQUENCE, "extensions")?);
    while !extensions.is_empty() {
        let mut extension = Reader::new(extensions.expect(SEQUENCE, "extension")?);
        let oid = extension.expect(OID, "extnID")?;
        extension.optional(BOOLEAN)?;
        let value = extension.expect(OCTET_STRING, "extnValue")?;
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        let mut value = Reader::new(value);
        let mut general_names = Reader::new(value.expect(SEQUENCE, "subjectAltName")?);
        let mut names = Vec::new();
        while !general_names.is_empty() {
            match general_names.any()? {
                (DNS_NAME, name) => names.push(String::from_utf8_lossy(name).into_owned()),
                (IP_ADDRESS, ip) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(ip) {
                        names.push(Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(ip) {
                        names.push(Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
        return Ok(names);
    }
    Ok(Vec::new())
}

/// The commonName values of a Name (`SEQUENCE OF SET OF { OID, value }`).
fn common_names(name: &[u8]) -> Result<Vec<String>, String> {
    let mut rdns = Reader::new(name);
    let mut names = Vec::new();
    while !rdns.is_empty() {
        let mut set = Reader::new(rdns.expect(SET, "subject")?);
        while !set.is_empty() {
            let mut attribute = Reader::new(set.expect(SEQUENCE, "subject attribute")?);
            let oid = attribute.expect(OID, "attribute type")?;
            let (_, value) = attribute.any()?;
            if oid == OID_COMMON_NAME {
                names.push(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    Ok(names)
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as
/// RFC 5280 requires them: in UTC, with seconds, without fractions.
fn time(reader: &mut Reader<'_>, what: &str) -> Result<i64, String> {
    let (tag, text) = reader.any()?;
    let bad = || format!("{what}: not a time RFC 5280 allows");
    let digits = match (tag, text.split_last()) {
        (UTC_TIME | GENERALIZED_TIME, Some((b'Z', digits))) => digits,
        _ => return Err(bad()),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| {
        digits[range]
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = number(0..2);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4), 4),
        _ => return Err(bad()),
    };
    let field = |i: usize| number(rest + 2 * i..rest + 2 * i + 2);
    let (month, day, hour, minute, second) = (field(0), field(1), field(2), field(3), field(4));
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar: count the days of a
/// year that starts in March (so the leap day ends it), in eras of 400 years.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2099, 1, 1) * 86_400, 4_070_908_800);
        // and back, through the formatter `baton check` prints with
        for secs in [0, 951_782_400, 4_070_908_800, -631_152_000, 253_402_300_799] {
            let text = super::super::check::utc(secs);
            let (y, m, d) = (&text[0..4], &text[5..7], &text[8..10]);
            let days = days_from_civil(y.parse().unwrap(), m.parse().unwrap(), d.parse().unwrap());
            assert_eq!(days, secs.div_euclid(86_400), "{text}");
        }
    }

    fn time_of(tag: u8, text: &str) -> Result<i64, String> {
        let mut der = vec![tag, text.len() as u8];
        der.extend_from_slice(text.as_bytes());
        time(&mut Reader::new(&der), "t")
    }

    #[test]
    fn times_as_rfc_5280_writes_them() {
        assert_eq!(time_of(UTC_TIME, "700101000000Z"), Ok(0));
        assert_eq!(time_of(UTC_TIME, "491231235959Z"), Ok(2_524_607_999));
        assert_eq!(time_of(UTC_TIME, "500101000000Z"), Ok(-631_152_000));
        assert_eq!(
            time_of(GENERALIZED_TIME, "20990101000000Z"),
            Ok(4_070_908_800)
        );
        for bad in [
            (UTC_TIME, "7001010000Z"),
            (UTC_TIME, "700101000000"),
            (UTC_TIME, "700101000000+0100"),
            (UTC_TIME, "701301000000Z"),
            (UTC_TIME, "700230000000Z"),
            (UTC_TIME, "700101240000Z"),
            (GENERALIZED_TIME, "20990101000000.5Z"),
            (GENERALIZED_TIME, "2099010100000aZ"),
            (OCTET_STRING, "700101000000Z"),
        ] {
            assert!(time_of(bad.0, bad.1).is_err(), "{bad:?}");
        }
        assert_eq!(time_of(UTC_TIME, "000229000000Z"), Ok(951_782_400));
        assert!(time_of(UTC_TIME, "010229000000Z").is_err());
    }

    #[test]
    fn lengths_are_checked() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x00],
            &[0x30, 0x80, 0x00, 0x00],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x82, 0x01],
            &[0x3f, 0x00],
            &[0x30, 0x00, 0x00],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
