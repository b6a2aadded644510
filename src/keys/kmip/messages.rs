//! KMIP request builders and response parsers for the operations the client uses.
//!
//! Every request is one batch item in a message of protocol version 1.4: the
//! Encrypt and Decrypt fields for authenticated encryption (additional data, tag) exist
//! from 1.4 on, and PyKMIP reads a request's batch items with the version its header
//! names, so an older version would make it reject those fields.

use super::ttlv::{Ttlv, Value};
use super::{KeyState, KmipError};

/// KMIP tags used by the client (KMIP 1.4 specification, section 9.1.3.1).
#[allow(missing_docs)]
pub mod tag {
    pub const ATTRIBUTE: u32 = 0x420008;
    pub const ATTRIBUTE_NAME: u32 = 0x42000A;
    pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
    pub const BATCH_COUNT: u32 = 0x42000D;
    pub const BATCH_ITEM: u32 = 0x42000F;
    pub const BLOCK_CIPHER_MODE: u32 = 0x420011;
    pub const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x420028;
    pub const CRYPTOGRAPHIC_PARAMETERS: u32 = 0x42002B;
    pub const IV_COUNTER_NONCE: u32 = 0x42003D;
    pub const NAME: u32 = 0x420053;
    pub const NAME_TYPE: u32 = 0x420054;
    pub const NAME_VALUE: u32 = 0x420055;
    pub const OBJECT_TYPE: u32 = 0x420057;
    pub const OPERATION: u32 = 0x42005C;
    pub const PROTOCOL_VERSION: u32 = 0x420069;
    pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
    pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
    pub const REQUEST_HEADER: u32 = 0x420077;
    pub const REQUEST_MESSAGE: u32 = 0x420078;
    pub const REQUEST_PAYLOAD: u32 = 0x420079;
    pub const RESPONSE_MESSAGE: u32 = 0x42007B;
    pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
    pub const RESULT_MESSAGE: u32 = 0x42007D;
    pub const RESULT_REASON: u32 = 0x42007E;
    pub const RESULT_STATUS: u32 = 0x42007F;
    pub const REVOCATION_REASON: u32 = 0x420081;
    pub const REVOCATION_REASON_CODE: u32 = 0x420082;
    pub const STATE: u32 = 0x42008D;
    pub const TEMPLATE_ATTRIBUTE: u32 = 0x420091;
    pub const UNIQUE_BATCH_ITEM_ID: u32 = 0x420093;
    pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
    pub const DATA: u32 = 0x4200C2;
    pub const TAG_LENGTH: u32 = 0x4200CE;
    pub const AE_ADDITIONAL_DATA: u32 = 0x4200FE;
    pub const AE_TAG: u32 = 0x4200FF;
}

/// KMIP operations (enumeration values of the Operation field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Create a managed object.
    Create = 1,
    /// Find objects by attribute.
    Locate = 8,
    /// Read attributes.
    GetAttributes = 11,
    /// Move a key to Active.
    Activate = 18,
    /// Move a key to Deactivated (or Compromised).
    Revoke = 19,
    /// Destroy a key.
    Destroy = 20,
    /// Encrypt with a key held by the server.
    Encrypt = 31,
    /// Decrypt with a key held by the server.
    Decrypt = 32,
}

const OBJECT_TYPE_SYMMETRIC_KEY: u32 = 2;
const ALGORITHM_AES: u32 = 3;
const USAGE_ENCRYPT_DECRYPT: i32 = 0x4 | 0x8;
const NAME_TYPE_TEXT: u32 = 1;
const MODE_GCM: u32 = 9;
const REVOKE_CESSATION_OF_OPERATION: u32 = 6;

/// Length of the GCM nonce the client chooses.
pub const GCM_IV_LEN: usize = 12;
/// Length of the GCM tag the client asks for.
pub const GCM_TAG_LEN: usize = 16;

/// A whole request message: header (version 1.4, batch count 1) and one batch item.
pub fn request(op: Operation, payload: Vec<Ttlv>) -> Ttlv {
    request_batch(op, vec![payload])
}

/// A request message with one batch item per payload, all of operation `op`. With
/// more than one, each item carries a Unique Batch Item ID (its index, 4 bytes big
/// endian) that the response items echo.
pub fn request_batch(op: Operation, payloads: Vec<Vec<Ttlv>>) -> Ttlv {
    let many = payloads.len() > 1;
    let mut items = vec![Ttlv::structure(
        tag::REQUEST_HEADER,
        vec![
            Ttlv::structure(
                tag::PROTOCOL_VERSION,
                vec![
                    Ttlv::integer(tag::PROTOCOL_VERSION_MAJOR, 1),
                    Ttlv::integer(tag::PROTOCOL_VERSION_MINOR, 4),
                ],
            ),
            Ttlv::integer(tag::BATCH_COUNT, payloads.len() as i32),
        ],
    )];
    for (i, payload) in payloads.into_iter().enumerate() {
        let mut item = vec![Ttlv::enumeration(tag::OPERATION, op as u32)];
        if many {
            item.push(Ttlv::bytes(tag::UNIQUE_BATCH_ITEM_ID, &(i as u32).to_be_bytes()));
        }
        item.push(Ttlv::structure(tag::REQUEST_PAYLOAD, payload));
        items.push(Ttlv::structure(tag::BATCH_ITEM, item));
    }
    Ttlv::structure(tag::REQUEST_MESSAGE, items)
}

fn attribute(name: &str, value: Ttlv) -> Ttlv {
    Ttlv::structure(
        tag::ATTRIBUTE,
        vec![
            Ttlv::text(tag::ATTRIBUTE_NAME, name),
            Ttlv {
                tag: tag::ATTRIBUTE_VALUE,
                ..value
            },
        ],
    )
}

fn name_value(name: &str) -> Ttlv {
    Ttlv::structure(
        tag::ATTRIBUTE_VALUE,
        vec![
            Ttlv::text(tag::NAME_VALUE, name),
            Ttlv::enumeration(tag::NAME_TYPE, NAME_TYPE_TEXT),
        ],
    )
}

fn uid(uid: &str) -> Ttlv {
    Ttlv::text(tag::UNIQUE_IDENTIFIER, uid)
}

/// Create: an AES-256 symmetric key for Encrypt and Decrypt, named `name`.
pub fn create(name: &str) -> Ttlv {
    request(
        Operation::Create,
        vec![
            Ttlv::enumeration(tag::OBJECT_TYPE, OBJECT_TYPE_SYMMETRIC_KEY),
            Ttlv::structure(
                tag::TEMPLATE_ATTRIBUTE,
                vec![
                    attribute("Cryptographic Algorithm", Ttlv::enumeration(0, ALGORITHM_AES)),
                    attribute("Cryptographic Length", Ttlv::integer(0, 256)),
                    attribute(
                        "Cryptographic Usage Mask",
                        Ttlv::integer(0, USAGE_ENCRYPT_DECRYPT),
                    ),
                    attribute("Name", name_value(name)),
                ],
            ),
        ],
    )
}

/// Activate the key `id`.
pub fn activate(id: &str) -> Ttlv {
    request(Operation::Activate, vec![uid(id)])
}

/// Locate the objects whose Name is `name`.
pub fn locate(name: &str) -> Ttlv {
    request(Operation::Locate, vec![attribute("Name", name_value(name))])
}

/// GetAttributes State and Name of `id`.
pub fn get_attributes(id: &str) -> Ttlv {
    request(
        Operation::GetAttributes,
        vec![
            uid(id),
            Ttlv::text(tag::ATTRIBUTE_NAME, "State"),
            Ttlv::text(tag::ATTRIBUTE_NAME, "Name"),
        ],
    )
}

/// Revoke `id` for cessation of operation.
pub fn revoke(id: &str) -> Ttlv {
    request(
        Operation::Revoke,
        vec![
            uid(id),
            Ttlv::structure(
                tag::REVOCATION_REASON,
                vec![Ttlv::enumeration(
                    tag::REVOCATION_REASON_CODE,
                    REVOKE_CESSATION_OF_OPERATION,
                )],
            ),
        ],
    )
}

/// Destroy `id`.
pub fn destroy(id: &str) -> Ttlv {
    request(Operation::Destroy, vec![uid(id)])
}

/// AES-GCM with a 16-byte tag. Field order is the specification's, which PyKMIP needs.
fn gcm_parameters() -> Ttlv {
    Ttlv::structure(
        tag::CRYPTOGRAPHIC_PARAMETERS,
        vec![
            Ttlv::enumeration(tag::BLOCK_CIPHER_MODE, MODE_GCM),
            Ttlv::enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, ALGORITHM_AES),
            Ttlv::integer(tag::TAG_LENGTH, GCM_TAG_LEN as i32),
        ],
    )
}

/// Encrypt `plaintext` under `id` with AES-GCM, nonce `iv`, additional data `aad`
/// (omitted when empty: GCM treats none and empty alike).
pub fn encrypt(id: &str, iv: &[u8], aad: &[u8], plaintext: &[u8]) -> Ttlv {
    request(Operation::Encrypt, encrypt_payload(id, iv, aad, plaintext))
}

/// One batch of Encrypt requests: `plaintexts[i]` under `id` with nonce `ivs[i]`.
pub fn encrypt_batch(id: &str, ivs: &[[u8; GCM_IV_LEN]], aad: &[u8], plaintexts: &[&[u8]]) -> Ttlv {
    let payloads = ivs
        .iter()
        .zip(plaintexts)
        .map(|(iv, p)| encrypt_payload(id, iv, aad, p))
        .collect();
    request_batch(Operation::Encrypt, payloads)
}

fn encrypt_payload(id: &str, iv: &[u8], aad: &[u8], plaintext: &[u8]) -> Vec<Ttlv> {
    let mut payload = vec![
        uid(id),
        gcm_parameters(),
        Ttlv::bytes(tag::DATA, plaintext),
        Ttlv::bytes(tag::IV_COUNTER_NONCE, iv),
    ];
    if !aad.is_empty() {
        payload.push(Ttlv::bytes(tag::AE_ADDITIONAL_DATA, aad));
    }
    payload
}

/// Decrypt `ciphertext` under `id` with AES-GCM, nonce `iv`, additional data `aad` and
/// tag `auth_tag`.
pub fn decrypt(id: &str, iv: &[u8], aad: &[u8], ciphertext: &[u8], auth_tag: &[u8]) -> Ttlv {
    // the fields of an Encrypt, in the same order, then the tag
    let mut payload = encrypt_payload(id, iv, aad, ciphertext);
    payload.push(Ttlv::bytes(tag::AE_TAG, auth_tag));
    request(Operation::Decrypt, payload)
}

/// The name the specification gives a Result Reason value.
pub fn result_reason_name(v: u32) -> String {
    let name = match v {
        0x01 => "Item Not Found",
        0x02 => "Response Too Large",
        0x03 => "Authentication Not Successful",
        0x04 => "Invalid Message",
        0x05 => "Operation Not Supported",
        0x06 => "Missing Data",
        0x07 => "Invalid Field",
        0x08 => "Feature Not Supported",
        0x09 => "Operation Canceled By Requester",
        0x0A => "Cryptographic Failure",
        0x0B => "Illegal Operation",
        0x0C => "Permission Denied",
        0x0D => "Object Archived",
        0x0E => "Index Out of Bounds",
        0x0F => "Application Namespace Not Supported",
        0x10 => "Key Format Type Not Supported",
        0x11 => "Key Compression Type Not Supported",
        0x12 => "Encoding Option Error",
        0x13 => "Key Value Not Present",
        0x14 => "Attestation Required",
        0x15 => "Attestation Failed",
        0x16 => "Sensitive",
        0x17 => "Not Extractable",
        0x18 => "Object Already Exists",
        0x100 => "General Failure",
        _ => return format!("reason 0x{v:x}"),
    };
    name.to_owned()
}

fn protocol(what: &str) -> KmipError {
    KmipError::Protocol(what.to_owned())
}

/// Checks a response message to an `op` request: on success returns its payload (an
/// empty structure if the server sent none); on a failure result returns
/// [`KmipError::Refused`] with the reason and the server's message.
pub fn parse_response(resp: &Ttlv, op: Operation) -> Result<Ttlv, KmipError> {
    if resp.tag != tag::RESPONSE_MESSAGE {
        return Err(protocol(
            "the KMS answered with something other than a response message",
        ));
    }
    let mut items = resp.children(tag::BATCH_ITEM);
    let item = items
        .next()
        .ok_or_else(|| protocol("the KMS response has no batch item"))?;
    if items.next().is_some() {
        return Err(protocol("the KMS response has more than one batch item"));
    }
    parse_item(item, op)
}

/// The payloads of a response to a [`request_batch`] of `n` items, in request order
/// (by their Unique Batch Item IDs); each item may have failed on its own.
pub fn parse_batch_response(
    resp: &Ttlv,
    op: Operation,
    n: usize,
) -> Result<Vec<Result<Ttlv, KmipError>>, KmipError> {
    if n == 1 {
        return Ok(vec![parse_response(resp, op)]);
    }
    if resp.tag != tag::RESPONSE_MESSAGE {
        return Err(protocol(
            "the KMS answered with something other than a response message",
        ));
    }
    let mut out: Vec<Option<Result<Ttlv, KmipError>>> = (0..n).map(|_| None).collect();
    for item in resp.children(tag::BATCH_ITEM) {
        let id = item
            .child(tag::UNIQUE_BATCH_ITEM_ID)
            .and_then(Ttlv::as_bytes)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_be_bytes(b) as usize)
            .ok_or_else(|| protocol("a KMS batch response item has no valid batch item id"))?;
        let slot = out
            .get_mut(id)
            .ok_or_else(|| protocol("a KMS batch response item has an unknown batch item id"))?;
        if slot.is_some() {
            return Err(protocol("the KMS answered one batch item twice"));
        }
        *slot = Some(parse_item(item, op));
    }
    // a server that stops at the first failed item (KMIP's default Batch Error
    // Continuation Option, Stop) answers no further: the batch fails with that item's
    // error
    if out.iter().any(Option::is_none) {
        if let Some(Some(Err(e))) = out
            .iter_mut()
            .find(|r| matches!(r, Some(Err(_))))
            .map(Option::take)
        {
            return Err(e);
        }
    }
    out.into_iter()
        .map(|r| r.ok_or_else(|| protocol("the KMS left a batch item unanswered")))
        .collect()
}

fn parse_item(item: &Ttlv, op: Operation) -> Result<Ttlv, KmipError> {
    let status = item
        .child(tag::RESULT_STATUS)
        .and_then(Ttlv::as_enum)
        .ok_or_else(|| protocol("the KMS response has no result status"))?;
    if status != 0 {
        let reason = item.child(tag::RESULT_REASON).and_then(Ttlv::as_enum);
        let message = item
            .child(tag::RESULT_MESSAGE)
            .and_then(Ttlv::as_text)
            .unwrap_or("");
        let reason = reason
            .map(result_reason_name)
            .unwrap_or_else(|| "no reason given".to_owned());
        let status = match status {
            1 => "failed",
            2 => "is pending (asynchronous operations are not supported)",
            3 => "was undone",
            _ => "failed with an unknown status",
        };
        let message = crate::text::shorten(message.trim().trim_end_matches('.'), 200);
        return Err(KmipError::Refused(if message.is_empty() {
            format!("KMIP {op:?} {status}: {reason}")
        } else {
            format!("KMIP {op:?} {status}: {reason}: {message}")
        }));
    }
    if let Some(got) = item.child(tag::OPERATION).and_then(Ttlv::as_enum) {
        if got != op as u32 {
            return Err(protocol("the KMS response is for another operation"));
        }
    }
    Ok(item
        .child(tag::RESPONSE_PAYLOAD)
        .cloned()
        .unwrap_or_else(|| Ttlv::structure(tag::RESPONSE_PAYLOAD, vec![])))
}

/// The Unique Identifier of a response payload.
pub fn payload_uid(payload: &Ttlv) -> Result<String, KmipError> {
    payload
        .child(tag::UNIQUE_IDENTIFIER)
        .and_then(Ttlv::as_text)
        .map(str::to_owned)
        .ok_or_else(|| protocol("the KMS response has no unique identifier"))
}

/// Every Unique Identifier of a Locate response payload.
pub fn payload_uids(payload: &Ttlv) -> Result<Vec<String>, KmipError> {
    payload
        .children(tag::UNIQUE_IDENTIFIER)
        .map(|t| {
            t.as_text()
                .map(str::to_owned)
                .ok_or_else(|| protocol("a located unique identifier is not text"))
        })
        .collect()
}

/// The State and Name attributes of a GetAttributes response payload.
pub fn payload_state_and_name(payload: &Ttlv) -> Result<(KeyState, Option<String>), KmipError> {
    let mut state = None;
    let mut name = None;
    for attr in payload.children(tag::ATTRIBUTE) {
        let value = attr.child(tag::ATTRIBUTE_VALUE);
        match attr.child(tag::ATTRIBUTE_NAME).and_then(Ttlv::as_text) {
            Some("State") => {
                let v = value
                    .and_then(Ttlv::as_enum)
                    .ok_or_else(|| protocol("the State attribute is not an enumeration"))?;
                state = Some(KeyState::from_kmip(v));
            }
            Some("Name") if name.is_none() => {
                let v = value
                    .and_then(|v| v.child(tag::NAME_VALUE))
                    .and_then(Ttlv::as_text)
                    .ok_or_else(|| protocol("the Name attribute has no text value"))?;
                name = Some(v.to_owned());
            }
            _ => {}
        }
    }
    let state = state.ok_or_else(|| protocol("the KMS did not return the key's State"))?;
    Ok((state, name))
}

/// The Data, IV and tag of an Encrypt response payload, as `iv || data || tag`. The IV
/// the client sent is used unless the server returns one.
pub fn payload_wrapped(payload: &Ttlv, sent_iv: &[u8]) -> Result<Vec<u8>, KmipError> {
    let data = payload
        .child(tag::DATA)
        .and_then(Ttlv::as_bytes)
        .ok_or_else(|| protocol("the Encrypt response has no data"))?;
    let iv = payload
        .child(tag::IV_COUNTER_NONCE)
        .and_then(Ttlv::as_bytes)
        .unwrap_or(sent_iv);
    if iv != sent_iv {
        return Err(protocol("the KMS encrypted with another IV than the one sent"));
    }
    let auth_tag = payload
        .child(tag::AE_TAG)
        .and_then(Ttlv::as_bytes)
        .ok_or_else(|| protocol("the Encrypt response has no authentication tag"))?;
    if auth_tag.len() != GCM_TAG_LEN || data.len() > usize::MAX - GCM_IV_LEN - GCM_TAG_LEN {
        return Err(protocol(
            "the Encrypt response's authentication tag is not 16 bytes",
        ));
    }
    let mut out = Vec::with_capacity(iv.len() + data.len() + auth_tag.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(data);
    out.extend_from_slice(auth_tag);
    Ok(out)
}

/// The Data of a Decrypt response payload.
pub fn payload_data(payload: &Ttlv) -> Result<&[u8], KmipError> {
    match payload.child(tag::DATA).map(|t| &t.value) {
        Some(Value::ByteString(b)) => Ok(b),
        _ => Err(protocol("the Decrypt response has no data")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(reason: Option<u32>, message: Option<&str>) -> Ttlv {
        let mut item = vec![
            Ttlv::enumeration(tag::OPERATION, Operation::Decrypt as u32),
            Ttlv::enumeration(tag::RESULT_STATUS, 1),
        ];
        if let Some(r) = reason {
            item.push(Ttlv::enumeration(tag::RESULT_REASON, r));
        }
        if let Some(m) = message {
            item.push(Ttlv::text(tag::RESULT_MESSAGE, m));
        }
        Ttlv::structure(
            tag::RESPONSE_MESSAGE,
            vec![Ttlv::structure(tag::BATCH_ITEM, item)],
        )
    }

    #[test]
    fn a_failure_is_refused_with_reason_and_message() {
        let err = parse_response(&failure(Some(0x0A), Some("Bad tag.")), Operation::Decrypt).unwrap_err();
        assert_eq!(
            err.to_string(),
            "KMS refused: KMIP Decrypt failed: Cryptographic Failure: Bad tag"
        );
        let err = parse_response(&failure(None, None), Operation::Decrypt).unwrap_err();
        assert!(
            matches!(err, KmipError::Refused(ref m) if m == "KMIP Decrypt failed: no reason given"),
            "{err}"
        );
    }

    #[test]
    fn malformed_responses_are_protocol_errors() {
        let not_response = Ttlv::structure(tag::REQUEST_MESSAGE, vec![]);
        assert!(matches!(
            parse_response(&not_response, Operation::Create),
            Err(KmipError::Protocol(_))
        ));
        let no_status = Ttlv::structure(
            tag::RESPONSE_MESSAGE,
            vec![Ttlv::structure(tag::BATCH_ITEM, vec![])],
        );
        assert!(matches!(
            parse_response(&no_status, Operation::Create),
            Err(KmipError::Protocol(_))
        ));
    }

    #[test]
    fn requests_carry_version_1_4_and_the_operation() {
        let req = encrypt("7", &[0; 12], b"aad", b"pt");
        let header = req.child(tag::REQUEST_HEADER).unwrap();
        let version = header.child(tag::PROTOCOL_VERSION).unwrap();
        assert_eq!(
            version.child(tag::PROTOCOL_VERSION_MINOR).unwrap().as_int(),
            Some(4)
        );
        let item = req.child(tag::BATCH_ITEM).unwrap();
        assert_eq!(item.child(tag::OPERATION).unwrap().as_enum(), Some(31));
        let payload = item.child(tag::REQUEST_PAYLOAD).unwrap();
        let tags: Vec<u32> = payload.items().iter().map(|t| t.tag).collect();
        assert_eq!(
            tags,
            [
                tag::UNIQUE_IDENTIFIER,
                tag::CRYPTOGRAPHIC_PARAMETERS,
                tag::DATA,
                tag::IV_COUNTER_NONCE,
                tag::AE_ADDITIONAL_DATA
            ]
        );
    }
}
