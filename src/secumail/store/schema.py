"""Tables of the embedded (SQLite) store. Statements are idempotent; run at every open."""

SCHEMA: list[str] = [
    """CREATE TABLE IF NOT EXISTS accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        locale TEXT NOT NULL DEFAULT 'en',
        notify_address TEXT,
        store_subject INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS domains (
        name TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        token TEXT NOT NULL,
        verified_at REAL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS credentials (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        kind TEXT NOT NULL,
        username TEXT NOT NULL UNIQUE,
        secret_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        account_id TEXT,
        mail_from TEXT NOT NULL,
        header_from TEXT,
        size INTEGER NOT NULL,
        message_id_header TEXT,
        subject TEXT,
        smtputf8 INTEGER NOT NULL DEFAULT 0,
        dsn_of TEXT,
        created_at REAL NOT NULL,
        finished_at REAL,
        warned_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS recipients (
        message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        address TEXT NOT NULL,
        domain TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        reply TEXT,
        enhanced TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (message_id, address)
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        recipient TEXT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS events_by_message ON events(message_id)",
    """CREATE TABLE IF NOT EXISTS attempts (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        domain TEXT NOT NULL,
        mx TEXT,
        ip TEXT,
        route_method TEXT,
        tls_version TEXT,
        cipher TEXT,
        cert_subject TEXT,
        cert_fingerprint TEXT,
        outcome TEXT NOT NULL,
        reply TEXT,
        at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS attempts_by_message ON attempts(message_id)",
    # Signing (DKIM keys, S/MIME certificates) and delivery evidence.
    "ALTER TABLE accounts ADD COLUMN smime INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE accounts ADD COLUMN gateway_dkim INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE accounts ADD COLUMN scan_fail_open INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE accounts ADD COLUMN allow_relaxed_tls INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE messages ADD COLUMN requiretls INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE messages ADD COLUMN tls_required_no INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE attempts ADD COLUMN policy TEXT",
    "ALTER TABLE credentials ADD COLUMN scopes TEXT",
    "ALTER TABLE messages ADD COLUMN api_metadata TEXT",
    """CREATE TABLE IF NOT EXISTS dkim_keys (
        domain TEXT NOT NULL,
        selector TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        sealed_key BLOB NOT NULL,
        public_record TEXT NOT NULL,
        created_at REAL NOT NULL,
        published_at REAL,
        retired_at REAL,
        PRIMARY KEY (domain, selector)
    )""",
    """CREATE TABLE IF NOT EXISTS smime_certs (
        address TEXT PRIMARY KEY,
        cert_pem TEXT NOT NULL,
        chain_pem TEXT NOT NULL,
        sealed_key BLOB NOT NULL,
        not_after REAL NOT NULL,
        issued_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS evidence (
        message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        recipient TEXT NOT NULL,
        token TEXT NOT NULL,
        kid TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (message_id, recipient)
    )""",
    # Secure-route state: MTA-STS policy cache, downgrade memory, operator TLS strategies,
    # TLS reporting counters.
    """CREATE TABLE IF NOT EXISTS mta_sts_policies (
        domain TEXT PRIMARY KEY,
        policy_id TEXT,
        mode TEXT NOT NULL,
        mx TEXT NOT NULL,
        max_age INTEGER NOT NULL,
        fetched_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS route_memory (
        domain TEXT PRIMARY KEY,
        method TEXT NOT NULL,
        seen_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS tls_policies (
        scope TEXT NOT NULL,
        name TEXT NOT NULL,
        dane TEXT NOT NULL,
        mta_sts TEXT NOT NULL,
        starttls TEXT NOT NULL,
        min_tls TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (scope, name)
    )""",
    """CREATE TABLE IF NOT EXISTS tlsrpt_results (
        day TEXT NOT NULL,
        policy_domain TEXT NOT NULL,
        policy_type TEXT NOT NULL,
        policy_string TEXT NOT NULL,
        mx_host TEXT NOT NULL,
        receiving_ip TEXT NOT NULL,
        result_type TEXT NOT NULL,
        detail TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (day, policy_domain, policy_type, policy_string, mx_host, receiving_ip, result_type)
    )""",
    """CREATE TABLE IF NOT EXISTS tlsrpt_sent (
        day TEXT NOT NULL,
        policy_domain TEXT NOT NULL,
        sent_at REAL NOT NULL,
        outcome TEXT NOT NULL,
        PRIMARY KEY (day, policy_domain)
    )""",
    # TLS reports other MTAs sent to the gateway (store/tls_reports_received.py):
    # metadata only, once per (organization, report-id).
    """CREATE TABLE IF NOT EXISTS tlsrpt_received (
        id INTEGER PRIMARY KEY,
        organization TEXT NOT NULL,
        report_id TEXT NOT NULL,
        start_at REAL NOT NULL,
        end_at REAL NOT NULL,
        contact_info TEXT NOT NULL,
        policies TEXT NOT NULL,
        received_at REAL NOT NULL,
        UNIQUE (organization, report_id)
    )""",
    "CREATE INDEX IF NOT EXISTS tlsrpt_received_by_end ON tlsrpt_received(end_at)",
    # The sending client's network (mail/ip_scope.client_network), for the per-client bound.
    "ALTER TABLE tlsrpt_received ADD COLUMN client_network TEXT NOT NULL DEFAULT ''",
    """CREATE INDEX IF NOT EXISTS tlsrpt_received_by_client
        ON tlsrpt_received(client_network, received_at)""",
    # REST API: suppressions, idempotency keys, webhooks and their deliveries.
    """CREATE TABLE IF NOT EXISTS suppressions (
        account_id TEXT NOT NULL,
        address TEXT NOT NULL,
        reason TEXT NOT NULL,
        origin TEXT NOT NULL,
        message_id TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (account_id, address)
    )""",
    """CREATE TABLE IF NOT EXISTS idempotency (
        account_id TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status INTEGER NOT NULL,
        response TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (account_id, key)
    )""",
    """CREATE TABLE IF NOT EXISTS webhooks (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id INTEGER PRIMARY KEY,
        webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        event_id TEXT NOT NULL,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL,
        delivered_at REAL,
        UNIQUE (webhook_id, event_id)
    )""",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_at)",
    """CREATE TABLE IF NOT EXISTS account_events (
        id INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        at REAL NOT NULL
    )""",
    # Open alerts (store/account_alerts.py): one row per account, kind and what it is about
    # while the alert stands; deleted when it is resolved (told once, and once on recovery).
    """CREATE TABLE IF NOT EXISTS account_alerts (
        account_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        about TEXT NOT NULL,
        detail TEXT NOT NULL,
        raised_at REAL NOT NULL,
        PRIMARY KEY (account_id, kind, about)
    )""",
    # The last health report of each customer domain (store/domain_health.py): metadata
    # about the domain's DNS and MX servers, read by `domain show` and the API.
    """CREATE TABLE IF NOT EXISTS domain_health (
        domain TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        checked_at REAL NOT NULL,
        report TEXT NOT NULL
    )""",
    # What TLS each credential submitted over (store/credential_tls.py): the strongest seen
    # ("what it used before") and the last; metadata of the connection, never of mail.
    """CREATE TABLE IF NOT EXISTS credential_tls (
        credential_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        best_version TEXT NOT NULL,
        best_cipher TEXT NOT NULL,
        best_rank INTEGER NOT NULL,
        last_version TEXT NOT NULL,
        last_cipher TEXT NOT NULL,
        last_rank INTEGER NOT NULL,
        last_channel TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS cursors (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    )""",
    # Accountability (store/audit.py): the hash-chained audit log. Append-only: the
    # triggers refuse deletes and every update but a GDPR erasure's pseudonymised subject.
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        subject_digest TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log(at)",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_only_erase BEFORE UPDATE ON audit_log
    WHEN NEW.subject NOT LIKE 'erased:%' OR NEW.seq IS NOT OLD.seq OR NEW.at IS NOT OLD.at
        OR NEW.actor IS NOT OLD.actor OR NEW.kind IS NOT OLD.kind
        OR NEW.subject_digest IS NOT OLD.subject_digest OR NEW.detail IS NOT OLD.detail
        OR NEW.prev_hash IS NOT OLD.prev_hash OR NEW.hash IS NOT OLD.hash
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    # Operator counters (store/counters.py): things dropped on purpose, e.g. bounces.
    """CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )""",
    # Replies the test address sent (store/test_replies.py): the sender domain and client
    # network they went to, for the hourly rate limits; rows older than an hour are purged.
    """CREATE TABLE IF NOT EXISTS test_replies (
        id INTEGER PRIMARY KEY,
        sender_domain TEXT NOT NULL,
        network TEXT NOT NULL,
        sent_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS test_replies_domain ON test_replies (sender_domain, sent_at)",
    "CREATE INDEX IF NOT EXISTS test_replies_network ON test_replies (network, sent_at)",
    # GDPR (store/retention.py): days an account's finished messages' metadata is kept
    # (NULL: the gateway's gdpr.retention_days).
    "ALTER TABLE accounts ADD COLUMN retention_days INTEGER",
]
