//! The few fields of an X.509 certificate that the trusted-self-signed check reads and
//! webpki does not expose: validity, issuer and subject names, extended key usage (RFC 5280
//! section 4.1). Read with `der`; nothing else of the certificate is interpreted.

use der::asn1::{GeneralizedTime, UtcTime};
use der::{AnyRef, Decode, Reader, SliceReader, Tag, TagNumber, Tagged};
use std::time::Duration;

/// `id-ce-extKeyUsage` (2.5.29.37), DER content bytes.
const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// `anyExtendedKeyUsage` (2.5.29.37.0).
const ANY_EKU: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
/// `id-kp-serverAuth` (1.3.6.1.5.5.7.3.1).
pub(crate) const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// `id-kp-clientAuth` (1.3.6.1.5.5.7.3.2).
pub(crate) const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertFields<'a> {
    /// Seconds since the Unix epoch.
    pub not_before: u64,
    pub not_after: u64,
    /// DER of the issuer and subject `Name`s.
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    /// The key purpose OIDs (content bytes) when the extension is present.
    pub ext_key_usage: Option<Vec<&'a [u8]>>,
}

impl CertFields<'_> {
    /// Issuer and subject are the same name (a self-issued, normally self-signed, certificate).
    pub fn self_issued(&self) -> bool {
        self.issuer == self.subject
    }

    /// OpenSSL's purpose check: without the extension any purpose goes; with it, `purpose`
    /// or `anyExtendedKeyUsage` must be listed.
    pub fn allows(&self, purpose: &[u8]) -> bool {
        match &self.ext_key_usage {
            None => true,
            Some(list) => list.iter().any(|p| *p == purpose || *p == ANY_EKU),
        }
    }
}

/// The fields of a DER certificate; `None` when it is not a well-formed X.509 certificate.
pub(crate) fn parse(der: &[u8]) -> Option<CertFields<'_>> {
    fields(der).ok()
}

fn fields(der: &[u8]) -> der::Result<CertFields<'_>> {
    let certificate = AnyRef::from_der(der)?;
    let mut outer = SliceReader::new(sequence_content(certificate)?)?;
    let tbs = AnyRef::decode(&mut outer)?;
    let mut reader = SliceReader::new(sequence_content(tbs)?)?;
    let mut items = Vec::new();
    while !reader.is_finished() {
        items.push(AnyRef::decode(&mut reader)?);
    }
    // version [0] EXPLICIT is optional (v1 certificates omit it).
    if items.first().is_some_and(|i| is_context(i.tag(), 0)) {
        items.remove(0);
    }
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, then the
    // optional [1] issuerUniqueID, [2] subjectUniqueID and [3] extensions.
    let [_, _, issuer, validity, subject, _, rest @ ..] = items.as_slice() else {
        return Err(Tag::Sequence.value_error());
    };
    let mut times = SliceReader::new(sequence_content(*validity)?)?;
    let not_before = time(AnyRef::decode(&mut times)?)?;
    let not_after = time(AnyRef::decode(&mut times)?)?;
    let mut ext_key_usage = None;
    if let Some(extensions) = rest.iter().find(|i| is_context(i.tag(), 3)) {
        ext_key_usage = eku(*extensions)?;
    }
    Ok(CertFields {
        not_before,
        not_after,
        issuer: issuer.value(),
        subject: subject.value(),
        ext_key_usage,
    })
}

fn sequence_content(any: AnyRef<'_>) -> der::Result<&[u8]> {
    if any.tag() != Tag::Sequence {
        return Err(any.tag().unexpected_error(Some(Tag::Sequence)));
    }
    Ok(any.value())
}

fn is_context(tag: Tag, number: u8) -> bool {
    matches!(tag, Tag::ContextSpecific { number: n, .. } if n == TagNumber::new(number))
}

fn time(any: AnyRef<'_>) -> der::Result<u64> {
    let since_epoch: Duration = match any.tag() {
        Tag::UtcTime => any.decode_as::<UtcTime>()?.to_unix_duration(),
        Tag::GeneralizedTime => any.decode_as::<GeneralizedTime>()?.to_unix_duration(),
        other => return Err(other.unexpected_error(Some(Tag::UtcTime))),
    };
    Ok(since_epoch.as_secs())
}

/// The purposes listed in the extendedKeyUsage extension of `[3] { Extensions }`, if any.
fn eku(extensions: AnyRef<'_>) -> der::Result<Option<Vec<&[u8]>>> {
    let list = AnyRef::from_der(extensions.value())?;
    let mut reader = SliceReader::new(sequence_content(list)?)?;
    while !reader.is_finished() {
        let extension = AnyRef::decode(&mut reader)?;
        let mut fields = SliceReader::new(sequence_content(extension)?)?;
        let id = AnyRef::decode(&mut fields)?;
        if id.tag() != Tag::ObjectIdentifier || id.value() != EXT_KEY_USAGE {
            continue;
        }
        // critical BOOLEAN DEFAULT FALSE, then extnValue OCTET STRING.
        let mut value = AnyRef::decode(&mut fields)?;
        if value.tag() == Tag::Boolean {
            value = AnyRef::decode(&mut fields)?;
        }
        if value.tag() != Tag::OctetString {
            return Err(value.tag().unexpected_error(Some(Tag::OctetString)));
        }
        let purposes = AnyRef::from_der(value.value())?;
        let mut oids = SliceReader::new(sequence_content(purposes)?)?;
        let mut out = Vec::new();
        while !oids.is_finished() {
            let oid = AnyRef::decode(&mut oids)?;
            if oid.tag() != Tag::ObjectIdentifier {
                return Err(oid.tag().unexpected_error(Some(Tag::ObjectIdentifier)));
            }
            out.push(oid.value());
        }
        return Ok(Some(out));
    }
    Ok(None)
}
