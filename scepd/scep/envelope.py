"""pkcsPKIEnvelope: CMS EnvelopedData with one RSA key-transport recipient.

Parsing yields an `Envelope` whose content key is still wrapped; unwrapping
needs the RA/CA private key, so it is asked of a `Decrypter` (token or
software) and the codec only does the symmetric part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

from asn1crypto import algos, cms, parser
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scepd import der, oids
from scepd import strict_der as sd
from scepd.keys.base import Decrypter, HashName, OaepParams, RsaPadding, hash_algorithm
from scepd.scep.ciphers import ContentCipher
from scepd.scep.constants import FailInfo
from scepd.scep.errors import ScepError, Unreadable
from scepd.scep.signed import ASN1_ERRORS, digest_algorithm_der, issuer_and_serial_der


@dataclass(frozen=True)
class Envelope:
    padding: RsaPadding
    oaep: OaepParams | None
    encrypted_key: bytes
    cipher: ContentCipher
    iv: bytes
    encrypted_content: bytes

    def open(self, cek: bytes) -> bytes:
        """Decrypt with an already unwrapped content key (a client opening a reply with its own key)."""
        ok, content = self.cipher.decrypt(cek, self.iv, self.encrypted_content)
        if not ok:
            raise ScepError(FailInfo.BAD_MESSAGE_CHECK, "the envelope does not decrypt")
        return content


@dataclass(frozen=True)
class Opened:
    """What a server got out of an envelope it could not refuse to try.

    `readable` is False when the key-transport block was rejected or the
    content's padding was wrong; `content` is then garbage that the caller
    still reads (and fails on) like any other, and `detail` says which, for
    the server's log only.
    """

    content: bytes = field(repr=False)
    readable: bool
    detail: str


async def unseal(env: Envelope, decrypter: Decrypter) -> Opened:
    """Unwrap the content key (implicit rejection) and decrypt the content, never raising for bad data.

    Raises `UnsupportedParameters` for a key transport the key will not
    handle (decided from the parameters alone) and `KeyBackendError` for a
    fault of the token.
    """
    unwrapped = await decrypter.unwrap(env.encrypted_key, env.padding, env.oaep, env.cipher.key_size)
    padded_ok, content = env.cipher.decrypt(unwrapped.key, env.iv, env.encrypted_content)
    if not unwrapped.genuine:
        detail = f"key transport: {unwrapped.detail}"
    else:
        detail = "ok" if padded_ok else "content padding"
    return Opened(content, unwrapped.genuine and padded_ok, detail)


async def open_envelope(env: Envelope, decrypter: Decrypter) -> bytes:
    """The content of `env`, or `Unreadable` (one fixed answer, whatever went wrong)."""
    opened = await unseal(env, decrypter)
    if not opened.readable:
        raise Unreadable(opened.detail)
    return opened.content


def _oaep_params(params: algos.RSAESOAEPParams) -> OaepParams:
    def name(value: str) -> HashName:
        try:
            return HashName(value)
        except ValueError:
            raise ScepError(FailInfo.BAD_ALG, f"unsupported OAEP hash {value}") from None

    if params["mask_gen_algorithm"]["algorithm"].native != "mgf1":
        raise ScepError(FailInfo.BAD_ALG, "unsupported OAEP mask generation function")
    source = params["p_source_algorithm"]
    label = source["parameters"].native if source["algorithm"].native == "p_specified" else b""
    return OaepParams(
        hash=name(params["hash_algorithm"]["algorithm"].native),
        mgf_hash=name(params["mask_gen_algorithm"]["parameters"]["algorithm"].native),
        label=label or b"",
    )


def _tlvs(data: bytes) -> list[tuple[int, int, int, bytes, bytes, bytes]]:
    """The BER values that follow one another in `data`."""
    values, pointer = [], 0
    while pointer < len(data):
        length = parser.peek(data[pointer:])
        values.append(parser.parse(data[pointer : pointer + length], strict=True))
        pointer += length
    return values


def _octets(method: int, body: bytes, depth: int = 0) -> bytes:
    """The value of a BER OCTET STRING, primitive or constructed from chunks."""
    if method == 0:
        return body
    if depth > 4:
        raise ValueError("constructed OCTET STRING nested too deeply")
    chunks = []
    for cls, inner_method, tag, _header, inner, _trailer in _tlvs(body):
        if cls != 0 or tag != 4:
            raise ValueError("a constructed OCTET STRING may only hold OCTET STRINGs")
        chunks.append(_octets(inner_method, inner, depth + 1))
    return b"".join(chunks)


def _encrypted_content(eci: cms.EncryptedContentInfo) -> bytes | None:
    """encryptedContent, also in the constructed BER form Go's pkcs7 (micromdm) sends.

    asn1crypto refuses a constructed implicitly tagged OCTET STRING, so the
    field is read from the raw values: contentType, algorithm, then [0].
    """
    fields = _tlvs(eci.contents)
    if len(fields) < 3:
        return None
    cls, method, tag, _header, body, _trailer = fields[2]
    if cls != 2 or tag != 0:
        raise ValueError("encryptedContent must be [0]")
    return _octets(method, body)


def parse_envelope(data: bytes) -> Envelope:
    """Parse a DER/BER ContentInfo(EnvelopedData).

    Structural problems are BAD_REQUEST; a well-formed envelope using
    algorithms we do not speak is BAD_ALG, so the client can tell them apart.
    """
    try:
        found = _strict_envelope(data)
    except (ValueError, IndexError):  # NotStrictDer, or anything the walk did not foresee
        found = None
    return found if found is not None else _general_envelope(data)


def _strict_envelope(data: bytes) -> Envelope | None:
    """The common case read by offsets (`scepd.strict_der`): strict DER, one key-transport
    recipient first, RSA PKCS#1 v1.5 or OAEP with default parameters, a cipher we speak.

    None (or NotStrictDer) for anything else, which `_general_envelope`
    then parses and, where it must, refuses with the precise failInfo.
    """
    d = data
    start, end = sd.whole(d, der.SEQUENCE)
    parts = sd.children(d, start, end)
    if [t for t, *_ in parts] != [der.OID, der.CONTEXT_0] or d[parts[0][2] : parts[0][3]] != _OID_ENVELOPED_DATA[2:]:
        return None
    start, end = sd.expect(d, parts[1][2], parts[1][3], der.SEQUENCE)
    fields = sd.children(d, start, end)
    tags = [t for t, *_ in fields]
    if tags[:3] != [der.INTEGER, der.SET, der.SEQUENCE] or tags[3:] not in ([], [der.CONTEXT_1]):
        return None  # originatorInfo, or something else unexpected
    ktri = next((r for r in sd.children(d, fields[1][2], fields[1][3]) if r[0] == der.SEQUENCE), None)
    if ktri is None:
        return None
    rid = sd.children(d, ktri[2], ktri[3])
    if (
        [t for t, *_ in rid][:1] != [der.INTEGER]
        or len(rid) != 4
        or rid[2][0] != der.SEQUENCE
        or rid[3][0] != der.OCTET_STRING
    ):
        return None
    algorithm = sd.children(d, rid[2][2], rid[2][3])
    if not algorithm or algorithm[0][0] != der.OID:
        return None
    transport = sd.oid_text(d[algorithm[0][2] : algorithm[0][3]])
    # Absent, NULL, or an empty RSAES-OAEP-params SEQUENCE: every field at its (SHA-1) default.
    default_params = len(algorithm) == 1 or (
        len(algorithm) == 2 and d[algorithm[1][1] : algorithm[1][3]] in (der.NULL, b"\x30\x00")
    )
    if transport == oids.RSA_ENCRYPTION:
        rsa_padding, oaep = RsaPadding.PKCS1V15, None
    elif transport == oids.RSAES_OAEP and default_params:
        rsa_padding, oaep = RsaPadding.OAEP, OaepParams()
    else:
        return None
    eci = sd.children(d, fields[2][2], fields[2][3])
    if [t for t, *_ in eci] != [der.OID, der.SEQUENCE, der.CONTEXT_0_PRIMITIVE]:
        return None  # no content, or a constructed [0] (Go's pkcs7): the general parser reads those
    content_alg = sd.children(d, eci[1][2], eci[1][3])
    if [t for t, *_ in content_alg] != [der.OID, der.OCTET_STRING]:
        return None
    cipher = ContentCipher.from_oid(sd.oid_text(d[content_alg[0][2] : content_alg[0][3]]))
    iv = d[content_alg[1][2] : content_alg[1][3]]
    encrypted = d[eci[2][2] : eci[2][3]]
    encrypted_key = d[rid[3][2] : rid[3][3]]
    if cipher is None or len(iv) != cipher.block_size or not encrypted or len(encrypted) % cipher.block_size:
        return None
    return Envelope(
        padding=rsa_padding, oaep=oaep, encrypted_key=encrypted_key, cipher=cipher, iv=iv, encrypted_content=encrypted
    )


def _general_envelope(data: bytes) -> Envelope:
    """Any BER asn1crypto reads, with a precise failInfo for what scepd cannot open."""
    try:
        info = cms.ContentInfo.load(data)
        if info["content_type"].native != "enveloped_data":
            raise ScepError(FailInfo.BAD_REQUEST, "the message content is not an EnvelopedData")
        enveloped = info["content"]
        ktri = next((r.chosen for r in enveloped["recipient_infos"] if r.name == "ktri"), None)
        if ktri is None:
            raise ScepError(FailInfo.BAD_ALG, "no key-transport recipient in the envelope")
        key_alg = ktri["key_encryption_algorithm"]
        transport = key_alg["algorithm"].dotted
        oaep: OaepParams | None = None
        if transport == oids.RSA_ENCRYPTION:
            rsa_padding = RsaPadding.PKCS1V15
        elif transport == oids.RSAES_OAEP:
            rsa_padding = RsaPadding.OAEP
            params = key_alg["parameters"]
            oaep = OaepParams() if params.native is None else _oaep_params(params)
        else:
            raise ScepError(FailInfo.BAD_ALG, f"unsupported key transport {transport}")
        eci = enveloped["encrypted_content_info"]
        content_alg = eci["content_encryption_algorithm"]
        cipher = ContentCipher.from_oid(content_alg["algorithm"].dotted)
        if cipher is None:
            raise ScepError(FailInfo.BAD_ALG, f"unsupported content cipher {content_alg['algorithm'].dotted}")
        iv = content_alg["parameters"].native
        if not isinstance(iv, bytes) or len(iv) != cipher.block_size:
            raise ScepError(FailInfo.BAD_REQUEST, "the content cipher has no valid IV")
        encrypted = _encrypted_content(eci)
        if not isinstance(encrypted, bytes) or not encrypted:
            raise ScepError(FailInfo.BAD_REQUEST, "the envelope has no encrypted content")
        if len(encrypted) % cipher.block_size:
            raise ScepError(FailInfo.BAD_REQUEST, "the encrypted content is not a whole number of cipher blocks")
        encrypted_key = ktri["encrypted_key"].native
        if not isinstance(encrypted_key, bytes):
            raise ScepError(FailInfo.BAD_REQUEST, "the envelope has no encrypted key")
    except ScepError:
        raise
    except ASN1_ERRORS as e:
        raise ScepError(FailInfo.BAD_REQUEST, f"malformed EnvelopedData: {e}") from e
    return Envelope(
        padding=rsa_padding,
        oaep=oaep,
        encrypted_key=encrypted_key,
        cipher=cipher,
        iv=iv,
        encrypted_content=encrypted,
    )


def wrap_key(public_key: rsa.RSAPublicKey, cek: bytes, rsa_padding: RsaPadding, oaep: OaepParams | None) -> bytes:
    if rsa_padding is RsaPadding.PKCS1V15:
        return public_key.encrypt(cek, padding.PKCS1v15())
    oaep = oaep or OaepParams()
    return public_key.encrypt(
        cek,
        padding.OAEP(
            mgf=padding.MGF1(hash_algorithm(oaep.mgf_hash)),
            algorithm=hash_algorithm(oaep.hash),
            label=oaep.label or None,
        ),
    )


def build_envelope(
    content: bytes,
    recipient: x509.Certificate,
    *,
    cipher: ContentCipher = ContentCipher.AES256_CBC,
    rsa_padding: RsaPadding = RsaPadding.PKCS1V15,
    oaep: OaepParams | None = None,
) -> bytes:
    """Encrypt `content` to `recipient`'s RSA key; returns DER ContentInfo(EnvelopedData).

    The encryptedContent is a primitive [0] OCTET STRING: some clients (and
    strict DER) reject the constructed form.
    """
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("a SCEP envelope can only be made for an RSA recipient")
    cek = os.urandom(cipher.key_size)
    iv = os.urandom(cipher.block_size)
    recipient_info = der.sequence(
        der.integer(0),
        issuer_and_serial_der(recipient),
        _key_encryption_algorithm_der(rsa_padding, oaep),
        der.octet_string(wrap_key(public_key, cek, rsa_padding, oaep)),
    )
    encrypted_content_info = der.sequence(
        _OID_DATA,
        der.sequence(der.oid(cipher.oid), der.octet_string(iv)),
        # [0] IMPLICIT OCTET STRING, primitive (0x80): strict DER, which some clients require.
        der.tlv(der.CONTEXT_0_PRIMITIVE, cipher.encrypt(cek, iv, content)),
    )
    enveloped = der.sequence(der.integer(0), der.set_of([recipient_info]), encrypted_content_info)
    return der.sequence(_OID_ENVELOPED_DATA, der.context(0, enveloped))


_OID_DATA = der.oid(oids.DATA)
_OID_ENVELOPED_DATA = der.oid(oids.ENVELOPED_DATA)


@lru_cache(maxsize=32)
def _key_encryption_algorithm_der(rsa_padding: RsaPadding, oaep: OaepParams | None) -> bytes:
    """The RecipientInfo's keyEncryptionAlgorithm: rsaEncryption without parameters, or RSAES-OAEP
    with RSAES-OAEP-params (RFC 4055 3.1) leaving out each field that equals its SHA-1 default."""
    if rsa_padding is RsaPadding.PKCS1V15:
        return der.algorithm(oids.RSA_ENCRYPTION, None)
    oaep = oaep or OaepParams()
    fields = []
    if oaep.hash is not HashName.SHA1:
        fields.append(der.context(0, digest_algorithm_der(oaep.hash)))
    if oaep.mgf_hash is not HashName.SHA1:
        fields.append(der.context(1, der.algorithm(oids.MGF1, digest_algorithm_der(oaep.mgf_hash))))
    if oaep.label:
        fields.append(der.context(2, der.algorithm(oids.P_SPECIFIED, der.octet_string(oaep.label))))
    return der.algorithm(oids.RSAES_OAEP, der.sequence(*fields))
