"""PII: each type found and redacted in a sentence, near misses left alone, records of every format."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from honing.data.pii import (
    PII_TYPES,
    PIIConfig,
    PIIScrubber,
    find_pii,
    iban_valid,
    luhn_valid,
    redact,
    shannon_entropy,
)


def scrub(text: str, types: list[str] | None = None) -> str:
    return redact(text, find_pii(text, types))


FOUND = [
    # (sentence, the part that must be found, its type)
    ("Write to jane.doe+news@example.co.uk today.", "jane.doe+news@example.co.uk", "email"),
    ("Call +44 20 7946 0958 after nine.", "+44 20 7946 0958", "phone"),
    ("Call (415) 555-2671 now.", "(415) 555-2671", "phone"),
    ("Call 415.555.2671 now.", "415.555.2671", "phone"),
    ("Call +1 (415) 555-2671 in 2024.", "+1 (415) 555-2671", "phone"),
    ("Card 4111 1111 1111 1111, exp 12/27.", "4111 1111 1111 1111", "credit_card"),
    ("Card 4111-1111-1111-1111 on file.", "4111-1111-1111-1111", "credit_card"),
    ("Pay to GB82 WEST 1234 5698 7654 32 THANKS", "GB82 WEST 1234 5698 7654 32", "iban"),
    ("Pay to GB82WEST12345698765432.", "GB82WEST12345698765432", "iban"),
    ("Server at 192.168.1.20.", "192.168.1.20", "ip_address"),
    ("Ping 2001:db8::8a2e:370:7334 please", "2001:db8::8a2e:370:7334", "ip_address"),
    ("Loopback is ::1 here", "::1", "ip_address"),
    ("SSN 123-45-6789 on the form.", "123-45-6789", "national_id"),
    ("NI number AB 12 34 56 C given.", "AB 12 34 56 C", "national_id"),
    ("NI number AB123456C given.", "AB123456C", "national_id"),
    ("Use postgres://admin:s3cr3t@db.example.com:5432/app.", "postgres://admin:s3cr3t@db.example.com:5432/app", "url_with_credentials"),
    ("key AKIAIOSFODNN7EXAMPLE leaked", "AKIAIOSFODNN7EXAMPLE", "secret"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 here", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "secret"),
    ("key sk-abcdefghijklmnopqrst12345 here", "sk-abcdefghijklmnopqrst12345", "secret"),
    ("slack xoxb-1234567890-abcdefghij here", "xoxb-1234567890-abcdefghij", "secret"),
    ("maps AIzaSyA-1234567890abcdefghijklmnopqrstu here", "AIzaSyA-1234567890abcdefghijklmnopqrstu", "secret"),
    ('config: api_key = "q8Zr2LxP0vTn5WsK9dYb"', "q8Zr2LxP0vTn5WsK9dYb", "secret"),
    ('{"auth_token": "Zx81bQ4mN0pL7rT2vY6w"}', "Zx81bQ4mN0pL7rT2vY6w", "secret"),
    ("API_KEY=q8Zr2LxP0vTn5WsK9dYb", "q8Zr2LxP0vTn5WsK9dYb", "secret"),
    (
        "auth: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U ok",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "secret",
    ),
]


@pytest.mark.parametrize("sentence, part, pii_type", FOUND, ids=[f"{t}-{i}" for i, (_, _, t) in enumerate(FOUND)])
def test_found_and_redacted(sentence, part, pii_type):
    matches = find_pii(sentence)
    assert [(m.type, m.text) for m in matches] == [(pii_type, part)]
    assert scrub(sentence) == sentence.replace(part, f"<{pii_type.upper()}>")


NOT_FOUND = [
    "Card 4111 1111 1111 1112 fails Luhn.",
    "Pay to GB82 WEST 1234 5698 7654 33 please.",  # checksum broken
    "Address 999.1.1.1 and 10.0.0.256 and 01.2.3.4 are not IPs.",
    "Release v1.2.3.4 and 1.2.3.4.5 are versions.",
    "SSN 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567 and 123-45-0000 are invalid.",
    "HMRC's specimen QQ 12 34 56 C is never issued.",
    'password = "changeme"',
    'token = "aaaaaaaaaaaaaaaaaaaaaaaa"',  # long but no entropy
    "Use sk-learn-style-pipelines-for-everything here.",
    "Meeting on 2024-01-15 at 10:30:00, since 1999; ts 2024-01-15T10:30:00Z.",
    "Order ORD-48213 and A-12345 cost $1,234.56 (or 3.14159 per unit); call 555-0199? no.",
    "Version 1.2.3, build 20240115, id 4155552671, zip 94103-1234.",
    "std::vector<int> and Foo::Bar; MAC 00:1A:2B:3C:4D:5E.",
    "Math: 3+4 = 7 and 123-456-7890 is not a real North American number.",
    "Visit https://example.com/path?q=1 or user@localhost.",
    # code and numbers that look like addresses, phones, cards or secrets
    "evens = x[0::2]; odds = x[1::2]; step = a[::3]",
    "weights 0.6449340668482264 and +35236450.6 and 1e-17",
    "log line 20080830 172159 started",
    "api_key = settings.OPENAI_API_KEY",
    'tokenizer_class = "LayoutLMv3Tokenizer"',
    "token = get_token_from_env2()",
    "secret_name: perl6_token_nesting_level_max",
]


@pytest.mark.parametrize("text", NOT_FOUND)
def test_no_false_positive(text):
    assert find_pii(text) == []


def test_bare_four_part_number_is_an_ip():
    # Documented: 1.2.3.4 is a valid address, so a bare four-part version string is redacted.
    assert scrub("version 1.2.3.4") == "version <IP_ADDRESS>"


def test_pem_private_key_block():
    text = "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx4Yz\nQm9ndXM=\n-----END RSA PRIVATE KEY-----\nthanks"
    assert scrub(text) == "key:\n<SECRET>\nthanks"
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\nAAAAAAAABAAABlwAAAAdzc2gt\nThat was my key."
    assert scrub(truncated) == "<SECRET>\nThat was my key."


def test_credentials_url_wins_over_email_and_ip_inside():
    text = "connect to https://bob:pa55word@10.0.0.5:8080/db now"
    matches = find_pii(text)
    assert [m.type for m in matches] == ["url_with_credentials"]
    assert scrub(text) == "connect to <URL_WITH_CREDENTIALS> now"
    # Without the URL type, what is inside is still found.
    assert {m.type for m in find_pii(text, ["email", "ip_address"])} == {"ip_address"}


def test_several_types_in_one_text_and_type_selection():
    text = "Mail a@b.io or call +44 20 7946 0958 from 192.168.0.1."
    assert scrub(text) == "Mail <EMAIL> or call <PHONE> from <IP_ADDRESS>."
    assert scrub(text, ["email"]) == "Mail <EMAIL> or call +44 20 7946 0958 from 192.168.0.1."
    with pytest.raises(ValueError, match="unknown PII types"):
        find_pii(text, ["passport"])


def test_checks():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")
    assert iban_valid("DE89370400440532013000")
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)


# --------------------------------------------------------------------------- records

RECORDS = {
    "text": {"text": "Reach me at ann@example.org or +44 20 7946 0958."},
    "instruction": {"instruction": "Email ann@example.org", "input": "SSN 123-45-6789", "output": "Done."},
    "chat": {
        "messages": [
            {"role": "user", "content": "My card is 4111 1111 1111 1111"},
            {"role": "assistant", "content": "Never share ann@example.org or cards."},
        ]
    },
    "sharegpt": {"conversations": [{"from": "human", "value": "ip 192.168.1.20"}, {"from": "gpt", "value": "ok"}]},
    "preference": {"prompt": "key AKIAIOSFODNN7EXAMPLE?", "chosen": "Rotate it.", "rejected": "Mail ann@example.org"},
}
EXPECTED = {
    "text": ({"text": "Reach me at <EMAIL> or <PHONE>."}, {"email": 1, "phone": 1}),
    "instruction": (
        {"instruction": "Email <EMAIL>", "input": "SSN <NATIONAL_ID>", "output": "Done."},
        {"email": 1, "national_id": 1},
    ),
    "chat": (
        {
            "messages": [
                {"role": "user", "content": "My card is <CREDIT_CARD>"},
                {"role": "assistant", "content": "Never share <EMAIL> or cards."},
            ]
        },
        {"credit_card": 1, "email": 1},
    ),
    "sharegpt": (
        {"conversations": [{"from": "human", "value": "ip <IP_ADDRESS>"}, {"from": "gpt", "value": "ok"}]},
        {"ip_address": 1},
    ),
    "preference": (
        {"prompt": "key <SECRET>?", "chosen": "Rotate it.", "rejected": "Mail <EMAIL>"},
        {"secret": 1, "email": 1},
    ),
}


@pytest.mark.parametrize("kind", list(RECORDS))
def test_redacts_records_of_every_format(kind):
    record = RECORDS[kind]
    result = PIIScrubber(PIIConfig()).scrub(record)
    assert (result.record, result.counts) == EXPECTED[kind]
    assert result.record is not record and RECORDS[kind] is record  # input untouched


def test_counts_by_type_and_findings_with_paths():
    record = {"text": "a@b.io, c@d.io and 192.168.1.20"}
    result = PIIScrubber(PIIConfig(action="report")).scrub(record)
    assert result.record is record
    assert result.counts == {"email": 2, "ip_address": 1}
    assert [(path, match.text) for path, match in result.findings] == [
        (("text",), "a@b.io"),
        (("text",), "c@d.io"),
        (("text",), "192.168.1.20"),
    ]


def test_action_drop_removes_records_with_any_find():
    scrubber = PIIScrubber(PIIConfig(action="drop"))
    dropped = scrubber.scrub(RECORDS["chat"])
    assert dropped.record is None and dropped.counts == {"credit_card": 1, "email": 1}
    clean = {"text": "nothing personal here"}
    assert scrubber.scrub(clean).record is clean


def test_config():
    assert PIIConfig().types == list(PII_TYPES)
    with pytest.raises(ValidationError):
        PIIConfig(types=["passport"])
    with pytest.raises(ValidationError):
        PIIConfig(types=[])
    for name, info in PIIConfig.model_fields.items():
        assert info.description, name
    scrubber = pickle.loads(pickle.dumps(PIIScrubber(PIIConfig(types=["email"]))))
    assert scrubber.scrub({"text": "x@y.io"}).record == {"text": "<EMAIL>"}
