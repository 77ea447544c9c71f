//! Against the real MariaDB at 127.0.0.1:3306 (root, no password): each test makes
//! its own database and drops it at the end.

use std::sync::atomic::{AtomicU32, Ordering};

use ledgersync_config::{ConnectorSpec, CursorSpec, DatabaseKind, DatabaseStream, TlsMode};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use secrecy::SecretString;

use super::{typesystem, MysqlDatabase};
use crate::source::{
    CanonicalType, Database, ReadRequest, RowOrigin, Source, SourceErrorKind, SourceIdentity,
};
use polars::prelude::{DataType, TimeUnit, TimeZone};

fn root_options() -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some("root"))
        .prefer_socket(false)
}

async fn root() -> Conn {
    Conn::new(root_options())
        .await
        .expect("MariaDB at 127.0.0.1:3306")
}

/// A throwaway database (and users), dropped when the test ends, passed or not.
struct Scratch {
    name: String,
    users: Vec<String>,
}

impl Scratch {
    async fn new(statements: &[&str]) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ls_mysql_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let scratch = Scratch {
            name,
            users: Vec::new(),
        };
        let mut conn = root().await;
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", scratch.name))
            .await
            .unwrap();
        conn.query_drop(format!("CREATE DATABASE {}", scratch.name))
            .await
            .unwrap();
        drop(conn);
        scratch.run(statements).await;
        scratch
    }

    /// Runs statements as root in the database, in a session that allows zero
    /// dates and writes TIMESTAMPs in UTC.
    async fn run(&self, statements: &[&str]) {
        let mut conn = Conn::new(root_options().db_name(Some(self.name.clone())))
            .await
            .unwrap();
        conn.query_drop("SET NAMES utf8mb4").await.unwrap();
        conn.query_drop("SET SESSION sql_mode = ''").await.unwrap();
        conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
        for statement in statements {
            conn.query_drop(*statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        conn.disconnect().await.unwrap();
    }

    /// A user who may log in with `password`, given `grants` (`ON ...` clauses).
    async fn user(&mut self, password: &str, grants: &[String]) -> String {
        let user = format!("{}_u{}", self.name, self.users.len());
        self.users.push(user.clone());
        let mut statements = vec![format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"
        )];
        for grant in grants {
            statements.push(format!("GRANT SELECT {grant} TO '{user}'@'%'"));
        }
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        self.run(&statements).await;
        user
    }

    fn database(&self, user: &str, password: &str, streams: Vec<DatabaseStream>) -> MysqlDatabase {
        MysqlDatabase::new(
            &spec(&self.name, user, streams),
            SecretString::from(password),
        )
        .unwrap()
    }

    fn root_database(&self) -> MysqlDatabase {
        self.database("root", "", vec![table_stream("s", "sales", None)])
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let name = self.name.clone();
        let users = std::mem::take(&mut self.users);
        // Drop cannot await: clean up on a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut conn = root().await;
                for user in users {
                    let _ = conn
                        .query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
                        .await;
                }
                // A connection left in a transaction on the database would make the
                // drop wait for its metadata lock.
                let stale: Vec<u64> = conn
                    .exec(
                        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
                        (name.clone(),),
                    )
                    .await
                    .unwrap_or_default();
                for id in stale {
                    let _ = conn.query_drop(format!("KILL {id}")).await;
                }
                let _ = conn
                    .query_drop(format!("DROP DATABASE IF EXISTS {name}"))
                    .await;
                let _ = conn.disconnect().await;
            });
        })
        .join();
    }
}

fn spec(database: &str, user: &str, streams: Vec<DatabaseStream>) -> ConnectorSpec {
    ConnectorSpec {
        kind: DatabaseKind::Mysql,
        host: "127.0.0.1".into(),
        port: Some(3306),
        database: database.into(),
        user: user.into(),
        tls: TlsMode::Disable,
        ca_file: None,
        source_timezone: None,
        schedule: None,
        statement_timeout_secs: 600,
        streams,
    }
}

fn table_stream(name: &str, table: &str, cursor: Option<(&str, &str)>) -> DatabaseStream {
    DatabaseStream {
        name: name.into(),
        table: Some(table.into()),
        query: None,
        mapping: "unused.toml".into(),
        cursor: cursor.map(|(column, lookback)| CursorSpec {
            column: column.into(),
            lookback: (!lookback.is_empty()).then(|| lookback.into()),
            reconcile: None,
        }),
    }
}

fn query_stream(name: &str, query: &str) -> DatabaseStream {
    DatabaseStream {
        name: name.into(),
        table: None,
        query: Some(query.into()),
        mapping: "unused.toml".into(),
        cursor: None,
    }
}

fn request(key: &[&str], cursor: Option<&str>, batch_rows: usize) -> ReadRequest {
    ReadRequest {
        identity: SourceIdentity {
            tenant: "t".into(),
            connector: "pos".into(),
            stream: "s".into(),
        },
        key: key.iter().map(|k| k.to_string()).collect(),
        cursor: cursor.map(str::to_string),
        batch_rows,
        columns: None,
        instant_columns: Vec::new(),
        decimal_columns: Vec::new(),
    }
}

/// Every row read, as (column, text) cells, with the batch sizes and row keys.
struct Read {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    batch_sizes: Vec<usize>,
    keys: Vec<String>,
    lines: Vec<u64>,
}

impl Read {
    fn column(&self, name: &str) -> Vec<Option<&str>> {
        let index = self.columns.iter().position(|c| c == name).unwrap();
        self.rows.iter().map(|r| r[index].as_deref()).collect()
    }
}

/// A column's values as text: instants handed over typed as the text a text
/// column holds for them.
fn texts_of(column: &polars::prelude::Column) -> polars::prelude::StringChunked {
    match column.datetime() {
        Ok(instants) => instants
            .physical()
            .iter()
            .map(|micros| micros.map(typesystem::instant_text))
            .collect(),
        Err(_) => column.str().unwrap().clone(),
    }
}

async fn read_all(source: &mut Box<dyn Source>) -> Read {
    let mut read = Read {
        columns: Vec::new(),
        rows: Vec::new(),
        batch_sizes: Vec::new(),
        keys: Vec::new(),
        lines: Vec::new(),
    };
    while let Some(batch) = source.next_batch().await.unwrap() {
        let frame = &batch.rows.frame;
        read.columns = frame
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        read.batch_sizes.push(batch.rows.len());
        read.lines.extend(&batch.rows.origin_lines);
        let RowOrigin::Relation { keys, .. } = &batch.origin else {
            panic!("a relation")
        };
        read.keys.extend(keys.iter().cloned());
        let columns: Vec<_> = read
            .columns
            .iter()
            .map(|name| texts_of(frame.column(name).unwrap()))
            .collect();
        for row in 0..frame.height() {
            read.rows.push(
                columns
                    .iter()
                    .map(|c| c.get(row).map(str::to_string))
                    .collect(),
            );
        }
    }
    assert!(
        source.next_batch().await.unwrap().is_none(),
        "stays finished"
    );
    read
}

const SALES: &[&str] = &[
    "CREATE TABLE sales (
        id INT PRIMARY KEY,
        amount DECIMAL(18,4),
        fine DECIMAL(65,30),
        big BIGINT UNSIGNED,
        at DATETIME(6),
        ts TIMESTAMP NULL,
        day DATE,
        note VARCHAR(50) CHARACTER SET utf8mb4,
        latin VARCHAR(20) CHARACTER SET latin1,
        flag TINYINT(1),
        kind ENUM('cash','card'),
        neg SMALLINT
    )",
    "INSERT INTO sales VALUES
        (1, -1234.5600, 12345678901234567890123456789012345.123456789012345678901234567891,
         18446744073709551615, '2024-01-31 10:00:00.000001', '2024-03-01 10:00:00', '2024-02-29',
         '日本 🍣', 'café', 1, 'card', -32768),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (3, 0.0001, 0, 0, '2024-01-31 10:00:00', '2024-03-01 10:00:00', '2024-01-01', '', 'x', 0, 'cash', 0)",
];

#[tokio::test(flavor = "multi_thread")]
async fn sales_read_as_exact_canonical_text() {
    let scratch = Scratch::new(SALES).await;
    let database = scratch.root_database();
    let stream = table_stream("s", "sales", None);
    let mut source = database
        .open(&stream, request(&["id"], None, 100))
        .await
        .unwrap();
    assert!(source.is_complete_read(), "no cursor: a full refresh");
    let read = read_all(&mut source).await;
    assert_eq!(source.cursor(), None);
    let expected: Vec<Vec<Option<&str>>> = vec![
        vec![
            Some("1"),
            Some("-1234.5600"),
            Some("12345678901234567890123456789012345.123456789012345678901234567891"),
            Some("18446744073709551615"),
            Some("2024-01-31 10:00:00.000001"),
            Some("2024-03-01T10:00:00Z"),
            Some("2024-02-29"),
            Some("日本 🍣"),
            Some("café"),
            Some("1"),
            Some("card"),
            Some("-32768"),
        ],
        std::iter::once(Some("2"))
            .chain(std::iter::repeat_n(None, 11))
            .collect(),
        vec![
            Some("3"),
            Some("0.0001"),
            Some("0.000000000000000000000000000000"),
            Some("0"),
            Some("2024-01-31 10:00:00"),
            Some("2024-03-01T10:00:00Z"),
            Some("2024-01-01"),
            Some(""),
            Some("x"),
            Some("0"),
            Some("cash"),
            Some("0"),
        ],
    ];
    let rows: Vec<Vec<Option<&str>>> = read
        .rows
        .iter()
        .map(|r| r.iter().map(|c| c.as_deref()).collect())
        .collect();
    assert_eq!(rows, expected);
    assert_eq!(
        read.columns,
        [
            "id", "amount", "fine", "big", "at", "ts", "day", "note", "latin", "flag", "kind",
            "neg"
        ]
    );
    assert_eq!(read.keys, ["1", "2", "3"]);
    assert_eq!(read.lines, [1, 2, 3]);

    // DATETIME placed by the connector's source_timezone becomes an instant.
    let mut jakarta = spec(&scratch.name, "root", vec![stream.clone()]);
    jakarta.source_timezone = Some("Asia/Jakarta".into());
    let database = MysqlDatabase::new(&jakarta, SecretString::from("")).unwrap();
    let mut source = database
        .open(&stream, request(&["id"], None, 100))
        .await
        .unwrap();
    let read = read_all(&mut source).await;
    assert_eq!(
        read.column("at"),
        [
            Some("2024-01-31T03:00:00.000001Z"),
            None,
            Some("2024-01-31T03:00:00Z")
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_reads_start_at_the_cursor_minus_the_lookback() {
    let scratch = Scratch::new(&[
        "CREATE TABLE orders (id INT PRIMARY KEY, amount DECIMAL(10,2), updated_at DATETIME, seq BIGINT)",
        "INSERT INTO orders VALUES
            (1, 1.00, '2024-05-01 09:00:00', 10),
            (2, 2.00, '2024-05-01 10:00:00', 20),
            (3, 3.00, '2024-05-01 11:00:00', 30),
            (4, 4.00, '2024-05-01 11:00:00', 40),
            (5, 5.00, NULL, 50)",
    ])
    .await;
    let database = scratch.root_database();
    let by_time = table_stream("o", "orders", Some(("updated_at", "10m")));

    // First sync: no committed cursor, everything, ordered by cursor then key.
    let mut source = database
        .open(&by_time, request(&["id"], None, 2))
        .await
        .unwrap();
    assert!(!source.is_complete_read());
    let read = read_all(&mut source).await;
    assert_eq!(read.keys, ["5", "1", "2", "3", "4"]);
    assert_eq!(read.batch_sizes, [2, 2, 1]);
    let cursor = source.cursor().unwrap();
    assert_eq!(cursor, "2024-05-01 11:00:00");

    scratch
        .run(&[
            "UPDATE orders SET amount = 2.50, updated_at = '2024-05-01 12:00:00' WHERE id = 2",
            // Committed late, with a time inside the look-back.
            "INSERT INTO orders VALUES (6, 6.00, '2024-05-01 10:55:00', 60)",
            // Outside the look-back: not read again.
            "INSERT INTO orders VALUES (7, 7.00, '2024-05-01 10:49:59', 70)",
            "INSERT INTO orders VALUES (8, 8.00, '2024-05-01 12:30:00', 80)",
        ])
        .await;
    let mut source = database
        .open(&by_time, request(&["id"], Some(&cursor), 100))
        .await
        .unwrap();
    let read = read_all(&mut source).await;
    assert_eq!(read.keys, ["6", "3", "4", "2", "8"]);
    assert_eq!(
        read.column("amount"),
        [
            Some("6.00"),
            Some("3.00"),
            Some("4.00"),
            Some("2.50"),
            Some("8.00")
        ]
    );
    assert_eq!(source.cursor().as_deref(), Some("2024-05-01 12:30:00"));

    // Nothing newer: the committed cursor stays.
    let mut source = database
        .open(&by_time, request(&["id"], Some("2024-06-01 00:00:00"), 100))
        .await
        .unwrap();
    assert!(read_all(&mut source).await.rows.is_empty());
    assert_eq!(source.cursor().as_deref(), Some("2024-06-01 00:00:00"));

    // An integer cursor looks back by a count.
    let by_seq = table_stream("o", "orders", Some(("seq", "15")));
    let mut source = database
        .open(&by_seq, request(&["id"], Some("50"), 100))
        .await
        .unwrap();
    let read = read_all(&mut source).await;
    assert_eq!(read.keys, ["4", "5", "6", "7", "8"]);
    assert_eq!(source.cursor().as_deref(), Some("80"));

    // A duration look-back on an integer cursor is a definition error.
    let wrong = table_stream("o", "orders", Some(("seq", "10m")));
    let error = database
        .open(&wrong, request(&["id"], Some("50"), 100))
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
    assert!(error.to_string().contains("look-back count"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamp_and_zoned_cursors_compare_as_instants() {
    let scratch = Scratch::new(&[
        "CREATE TABLE t (id INT PRIMARY KEY, ts TIMESTAMP NULL, local_at DATETIME)",
        "INSERT INTO t VALUES
            (1, '2024-05-01 09:00:00', '2024-05-01 16:00:00'),
            (2, '2024-05-01 10:00:00', '2024-05-01 17:00:00'),
            (3, '2024-05-01 11:00:00', '2024-05-01 18:00:00')",
    ])
    .await;
    let database = scratch.root_database();
    let stream = table_stream("t", "t", Some(("ts", "1h")));
    let mut source = database
        .open(&stream, request(&["id"], Some("2024-05-01T11:00:00Z"), 100))
        .await
        .unwrap();
    assert_eq!(read_all(&mut source).await.keys, ["2", "3"]);
    assert_eq!(source.cursor().as_deref(), Some("2024-05-01T11:00:00Z"));

    // Jakarta is UTC+7: the committed 10:00Z is 17:00 local, minus 30 minutes.
    let mut zoned = spec(&scratch.name, "root", vec![]);
    zoned.source_timezone = Some("Asia/Jakarta".into());
    let database = MysqlDatabase::new(&zoned, SecretString::from("")).unwrap();
    let stream = table_stream("t", "t", Some(("local_at", "30m")));
    let mut source = database
        .open(&stream, request(&["id"], Some("2024-05-01T10:00:00Z"), 100))
        .await
        .unwrap();
    assert_eq!(read_all(&mut source).await.keys, ["2", "3"]);
    assert_eq!(source.cursor().as_deref(), Some("2024-05-01T11:00:00Z"));
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_hold_batch_rows_and_name_their_rows() {
    let scratch = Scratch::new(&[
        // A reserved word as a table name: quoting reads it.
        "CREATE TABLE `lines` (sale VARCHAR(10), line INT, qty INT, PRIMARY KEY (sale, line))",
        "INSERT INTO `lines` VALUES ('S1',1,1),('S1',2,2),('S2',1,3),('S3',1,4),('S3',2,5),('S3',3,6),('S4',1,7)",
    ])
    .await;
    let database = scratch.root_database();
    let stream = table_stream("l", "lines", Some(("qty", "")));
    let mut source = database
        .open(&stream, request(&["sale", "line"], None, 3))
        .await
        .unwrap();
    let mut sizes = Vec::new();
    let mut described = Vec::new();
    while let Some(batch) = source.next_batch().await.unwrap() {
        sizes.push(batch.rows.len());
        let last = *batch.rows.origin_lines.last().unwrap();
        described.push(batch.describe(last));
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(
        described,
        [
            "lines row 3 (sale,line=S2,1)",
            "lines row 6 (sale,line=S3,3)",
            "lines row 7 (sale,line=S4,1)"
        ]
    );
    assert_eq!(source.cursor().as_deref(), Some("7"));

    // Dropping a source mid-read stops its query; the next read is unaffected.
    let mut source = database
        .open(&stream, request(&["sale", "line"], None, 1))
        .await
        .unwrap();
    assert!(source.next_batch().await.unwrap().is_some());
    drop(source);
    let mut source = database
        .open(&stream, request(&["sale", "line"], None, 100))
        .await
        .unwrap();
    assert_eq!(read_all(&mut source).await.rows.len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_failures_are_classified_without_the_password() {
    let mut scratch = Scratch::new(SALES).await;
    scratch
        .run(&[
            "CREATE TABLE other_table (id INT)",
            "INSERT INTO other_table VALUES (1)",
        ])
        .await;
    let secret = "s3cret-Pa55word";
    let reader = scratch
        .user(secret, &[format!("ON {}.other_table", scratch.name)])
        .await;
    let streams = vec![table_stream("s", "sales", None)];
    let stream = table_stream("s", "sales", None);
    let key = || request(&["id"], None, 10);

    let wrong = scratch.database(&reader, "not-the-password", streams.clone());
    let error = wrong.check(&streams).await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Login, "{error}");
    assert!(!error.to_string().contains("not-the-password"), "{error}");
    assert!(error.to_string().contains(&reader), "{error}");

    let mut closed = spec(&scratch.name, "root", streams.clone());
    closed.port = Some(1);
    let closed = MysqlDatabase::new(&closed, SecretString::from(secret)).unwrap();
    let error = closed.check(&streams).await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Unreachable, "{error}");
    assert!(error.to_string().contains("connection refused"), "{error}");
    assert!(error.is_transient());

    // SELECT on another table only: the sales table is refused.
    let reader_db = scratch.database(&reader, secret, streams.clone());
    let error = reader_db.open(&stream, key()).await.err().unwrap();
    assert_eq!(error.kind, SourceErrorKind::Permission, "{error}");
    assert!(error.to_string().contains("sales"), "{error}");
    assert!(!error.to_string().contains(secret), "{error}");
    let error = reader_db.check(&streams).await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Permission, "{error}");

    // Grants on another database only: the connector's database is refused.
    let elsewhere = scratch.user(secret, &["ON mysql.db".to_string()]).await;
    let error = scratch
        .database(&elsewhere, secret, streams.clone())
        .check(&streams)
        .await
        .unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Permission, "{error}");
    assert!(!error.to_string().contains(secret), "{error}");

    for shown in [
        format!("{reader_db:?}"),
        format!("{:?}", reader_db.check(&streams).await.unwrap_err()),
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(format!("{reader_db:?}").contains("127.0.0.1:3306"));

    // The local server has no TLS: `require` says so as a TLS failure.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut tls = spec(&scratch.name, "root", streams.clone());
    tls.tls = TlsMode::Require;
    let error = MysqlDatabase::new(&tls, SecretString::from(""))
        .unwrap()
        .check(&streams)
        .await
        .unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Tls, "{error}");
    assert!(error.to_string().contains("does not offer TLS"), "{error}");
    tls.tls = TlsMode::VerifyFull;
    tls.ca_file = Some("/nonexistent/ca.pem".into());
    let error = MysqlDatabase::new(&tls, SecretString::from("")).unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Tls, "{error}");
    assert!(
        error
            .to_string()
            .contains("cannot read ca_file /nonexistent/ca.pem"),
        "{error}"
    );
    tls.ca_file = None;
    // `prefer` falls back to plaintext when the server offers no TLS.
    tls.tls = TlsMode::Prefer;
    let check = MysqlDatabase::new(&tls, SecretString::from(""))
        .unwrap()
        .check(&streams)
        .await
        .unwrap();
    assert!(check.server.starts_with("MariaDB 10."), "{}", check.server);
    assert_eq!(check.streams, ["s: 3 rows readable in sales"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn definitions_and_types_without_a_reading_are_named() {
    let scratch = Scratch::new(&[
        "CREATE TABLE prices (id INT PRIMARY KEY, price DOUBLE)",
        "INSERT INTO prices VALUES (1, 0.1)",
        "CREATE TABLE visits (id INT PRIMARY KEY, day DATE, at DATETIME)",
        "INSERT INTO visits VALUES (1, '2024-01-02', '2024-01-02 00:00:00'), (2, '0000-00-00', '2024-01-02 00:00:00'), (3, '2024-01-02', '2024-00-10 00:00:00')",
    ])
    .await;
    let database = scratch.root_database();
    let key = || request(&["id"], None, 10);

    let error = database
        .open(&table_stream("m", "missing", None), key())
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
    assert!(error.to_string().contains("missing"), "{error}");
    let error = database
        .open(&query_stream("q", "SELECT nope FROM prices"), key())
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
    let error = database
        .open(
            &table_stream("v", "visits", None),
            request(&["sku"], None, 10),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
    assert!(error.to_string().contains("no column sku"), "{error}");

    let error = database
        .open(&table_stream("p", "prices", None), key())
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind, SourceErrorKind::Type, "{error}");
    assert!(
        error.to_string().contains("column price is DOUBLE"),
        "{error}"
    );
    assert!(error.to_string().contains("CAST(col AS DECIMAL"), "{error}");
    // The advised query reads it exactly.
    let mut source = database
        .open(
            &query_stream(
                "p",
                "SELECT id, CAST(price AS DECIMAL(10,4)) AS price FROM prices",
            ),
            key(),
        )
        .await
        .unwrap();
    assert_eq!(
        read_all(&mut source).await.column("price"),
        [Some("0.1000")]
    );

    let mut source = database
        .open(&table_stream("v", "visits", None), key())
        .await
        .unwrap();
    let error = loop {
        match source.next_batch().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a zero date was read"),
            Err(error) => break error,
        }
    };
    assert_eq!(error.kind, SourceErrorKind::Type, "{error}");
    assert_eq!(
        error.to_string(),
        "visits row 2 (id=2): column day: '0000-00-00' is not a date (a zero date or zero month or day); fix the row, or read the stream from a query with NULLIF(`day`, '0000-00-00')"
    );
    let mut source = database
        .open(
            &query_stream(
                "v",
                "SELECT id, NULLIF(day, '0000-00-00') AS day FROM visits WHERE id < 3",
            ),
            key(),
        )
        .await
        .unwrap();
    assert_eq!(
        read_all(&mut source).await.column("day"),
        [Some("2024-01-02"), None]
    );
    let mut source = database
        .open(
            &query_stream("v", "SELECT id, at FROM visits WHERE id = 3"),
            key(),
        )
        .await
        .unwrap();
    let error = source.next_batch().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("id=3): column at: '2024-00-10 00:00:00'"),
        "{error}"
    );

    // The statement timeout stops a long query.
    let mut short = spec(&scratch.name, "root", vec![]);
    short.statement_timeout_secs = 1;
    let database = MysqlDatabase::new(&short, SecretString::from("")).unwrap();
    let mut source = database
        .open(
            &query_stream("slow", "SELECT id, SLEEP(3) AS s FROM prices"),
            key(),
        )
        .await
        .unwrap();
    let error = source.next_batch().await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Timeout, "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_lists_tables_with_canonical_types() {
    let scratch = Scratch::new(&[
        "CREATE TABLE sales (id INT NOT NULL PRIMARY KEY, amount DECIMAL(18,4), price DOUBLE, ts TIMESTAMP NULL, note TEXT, raw BLOB, big BIGINT UNSIGNED)",
        "CREATE VIEW sales_view AS SELECT id, amount FROM sales",
    ])
    .await;
    let tables = scratch.root_database().discover().await.unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["sales", "sales_view"]);
    assert!(tables.iter().all(|t| t.schema == scratch.name));
    let columns: Vec<(&str, &str, Option<CanonicalType>, bool)> = tables[0]
        .columns
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.source_type.as_str(),
                c.canonical,
                c.nullable,
            )
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("id", "int(11)", Some(CanonicalType::Integer), false),
            (
                "amount",
                "decimal(18,4)",
                Some(CanonicalType::Decimal),
                true
            ),
            ("price", "double", None, true),
            ("ts", "timestamp", Some(CanonicalType::TimestampTz), true),
            ("note", "text", Some(CanonicalType::Text), true),
            ("raw", "blob", None, true),
            (
                "big",
                "bigint(20) unsigned",
                Some(CanonicalType::Integer),
                true
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_identifiers_are_quoted() {
    let scratch = Scratch::new(&[
        "CREATE TABLE `odd ``name` (`my key` INT PRIMARY KEY, `up``d` INT)",
        "INSERT INTO `odd ``name` VALUES (1, 10), (2, 20), (3, 30)",
    ])
    .await;
    let database = scratch.root_database();
    let stream = table_stream("odd", "odd `name", Some(("up`d", "15")));
    let mut source = database
        .open(&stream, request(&["my key"], Some("30"), 10))
        .await
        .unwrap();
    let read = read_all(&mut source).await;
    assert_eq!(read.keys, ["2", "3"]);
    assert_eq!(read.columns, ["my key", "up`d"]);
    let check = database.check(&[stream]).await.unwrap();
    assert_eq!(check.streams, ["odd: 3 rows readable in odd `name"]);
}

#[test]
fn counts_are_written_with_thousands_separators() {
    assert_eq!(super::thousands(0), "0");
    assert_eq!(super::thousands(999), "999");
    assert_eq!(super::thousands(1000), "1,000");
    assert_eq!(super::thousands(128_042), "128,042");
    assert_eq!(super::thousands(12_345_678), "12,345,678");
}

/// Columns asked for as instants come as `Datetime(µs, UTC)` holding the instants
/// their texts name (TIMESTAMP, and DATETIME in the source zone); a key column and
/// a DATETIME without a zone stay text, and the cursor reads as before.
#[tokio::test(flavor = "multi_thread")]
async fn instants_asked_for_are_the_instants_of_their_texts() {
    let scratch = Scratch::new(&[
        "CREATE TABLE t (at DATETIME(6) PRIMARY KEY, ts TIMESTAMP(3) NULL, local_at DATETIME)",
        "INSERT INTO t VALUES
            ('2024-05-01 09:00:00.5', '2024-05-01 09:00:00.25', '2024-05-01 16:00:00'),
            ('2024-05-01 10:00:00', NULL, '2024-05-01 17:00:00'),
            ('2024-05-01 11:00:00', '2024-05-01 11:00:00', NULL)",
    ])
    .await;
    let stream = table_stream("t", "t", Some(("local_at", "")));
    let read = |zone: Option<&str>, instants: &[&str]| {
        let mut zoned = spec(&scratch.name, "root", vec![]);
        zoned.source_timezone = zone.map(str::to_string);
        let database = MysqlDatabase::new(&zoned, SecretString::from("")).unwrap();
        let mut request = request(&["at"], None, 2);
        request.instant_columns = instants.iter().map(|c| c.to_string()).collect();
        let stream = &stream;
        async move {
            let mut source = database.open(stream, request).await.unwrap();
            let mut dtypes = Vec::new();
            let mut rows = Vec::new();
            while let Some(batch) = source.next_batch().await.unwrap() {
                let frame = &batch.rows.frame;
                dtypes = frame.dtypes();
                for row in 0..frame.height() {
                    rows.push(
                        frame
                            .columns()
                            .iter()
                            .map(|c| texts_of(c).get(row).map(str::to_string))
                            .collect::<Vec<_>>(),
                    );
                }
            }
            (rows, dtypes, source.cursor())
        }
    };
    let all = ["at", "ts", "local_at"];
    let (texts, _, text_cursor) = read(Some("Asia/Jakarta"), &[]).await;
    let (instants, dtypes, instant_cursor) = read(Some("Asia/Jakarta"), &all).await;
    assert_eq!(instants, texts);
    assert_eq!(instant_cursor, text_cursor);
    assert_eq!(text_cursor.as_deref(), Some("2024-05-01T10:00:00Z"));
    // A NULL DATETIME sorts first: the 09:00 row is the second.
    assert_eq!(texts[1][1].as_deref(), Some("2024-05-01T09:00:00.250000Z"));
    let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    assert_eq!(dtypes, [DataType::String, utc.clone(), utc.clone()]);
    // Without a zone a DATETIME is a wall-clock time, not an instant: text.
    let (_, dtypes, _) = read(None, &all).await;
    assert_eq!(dtypes, [DataType::String, utc, DataType::String]);
}

/// Amount columns asked for as decimals come as `Decimal(38, 8)` holding what their
/// text says; one too wide for that (DECIMAL(65,30)) and a key stay text.
#[tokio::test(flavor = "multi_thread")]
async fn decimals_asked_for_are_the_numbers_of_their_texts() {
    let scratch = Scratch::new(SALES).await;
    let database = scratch.root_database();
    let stream = table_stream("s", "sales", None);
    let mut request = request(&["id"], None, 2);
    request.decimal_columns = vec!["amount".into(), "fine".into(), "id".into()];
    let mut source = database.open(&stream, request).await.unwrap();
    let mut amounts = Vec::new();
    while let Some(batch) = source.next_batch().await.unwrap() {
        let frame = &batch.rows.frame;
        assert_eq!(
            frame.column("amount").unwrap().dtype(),
            &DataType::Decimal(38, 8)
        );
        assert_eq!(frame.column("fine").unwrap().dtype(), &DataType::String);
        assert_eq!(frame.column("id").unwrap().dtype(), &DataType::String);
        let column = frame.column("amount").unwrap().decimal().unwrap().clone();
        amounts.extend(column.physical().iter());
    }
    assert_eq!(amounts, [Some(-123_456_000_000), None, Some(10_000)]);
}
