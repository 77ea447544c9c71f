//! Against a real SQL Server, when `LEDGERSYNC_TEST_MSSQL_URL` holds an ADO
//! string for a login that may create databases and logins, e.g.
//! `server=tcp:127.0.0.1,1433;user=sa;password=...;TrustServerCertificate=true`.
//! Without it these tests print a note and pass without checking anything (SQL
//! Server cannot run everywhere); each test creates its own database and drops
//! it at the end. `an_unused_port_is_unreachable` needs no server.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use ledgersync_config::{ConnectorSpec, CursorSpec, DatabaseKind, DatabaseStream, TlsMode};
use secrecy::SecretString;

use crate::source::SourceIdentity;

use super::*;
use crate::source::CanonicalType;

const URL_VAR: &str = "LEDGERSYNC_TEST_MSSQL_URL";

/// Where the test server is, from the ADO string.
#[derive(Clone)]
struct Server {
    url: String,
    host: String,
    port: u16,
    user: String,
    password: String,
    trust_certificate: bool,
}

/// The server, or `None` after printing why the test checks nothing.
fn server(test: &str) -> Option<Server> {
    let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.trim().is_empty()) else {
        println!("{test}: skipped, no SQL Server ({URL_VAR} is not set)");
        return None;
    };
    let mut server = Server {
        url: url.clone(),
        host: "127.0.0.1".into(),
        port: 1433,
        user: String::new(),
        password: String::new(),
        trust_certificate: false,
    };
    for pair in url.split(';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "server" | "data source" => {
                let address = value.trim_start_matches("tcp:");
                match address.split_once(',') {
                    Some((host, port)) => {
                        server.host = host.trim().into();
                        server.port = port.trim().parse().expect("a port after the comma");
                    }
                    None => server.host = address.into(),
                }
            }
            "user" | "uid" | "user id" | "username" => server.user = value.into(),
            "password" | "pwd" => server.password = value.into(),
            "trustservercertificate" => {
                server.trust_certificate =
                    matches!(value.to_ascii_lowercase().as_str(), "true" | "yes")
            }
            _ => {}
        }
    }
    Some(server)
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The test login's own connection, to `database` (or its default).
async fn admin(server: &Server, database: Option<&str>) -> Connection {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = Config::from_ado_string(&server.url).expect("an ADO connection string");
    if let Some(database) = database {
        config.database(database);
    }
    let tcp = TcpStream::connect(config.get_addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    Client::connect(config, tcp.compat_write()).await.unwrap()
}

async fn run_sql(server: &Server, database: Option<&str>, statements: &[&str]) {
    let mut client = admin(server, database).await;
    for statement in statements {
        execute(&mut client, statement).await;
    }
    client.close().await.unwrap();
}

async fn execute(client: &mut Connection, statement: &str) {
    let stream = client
        .simple_query(statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    stream
        .into_results()
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Runs `body` with the name of a fresh database set up by `setup`, then drops
/// the database (and `logins`), also when `body` panics.
async fn with_database<F, Fut>(server: &Server, setup: &[&str], logins: &[&str], body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = unique("ls_ms");
    let mut client = admin(server, None).await;
    execute(
        &mut client,
        &format!("CREATE DATABASE {}", sql::quote(&name)),
    )
    .await;
    let mut inside = admin(server, Some(&name)).await;
    let mut setup_error = None;
    for statement in setup {
        let result = match inside.simple_query(*statement).await {
            Ok(stream) => stream.into_results().await.map(|_| ()),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            setup_error = Some(format!("setup failed: {statement}: {error}"));
            break;
        }
    }
    inside.close().await.unwrap();
    let result = match setup_error {
        None => tokio::spawn(body(name.clone()))
            .await
            .map_err(|e| e.into_panic()),
        Some(error) => Err(Box::new(error) as Box<dyn std::any::Any + Send>),
    };
    execute(
        &mut client,
        &format!(
            "ALTER DATABASE {q} SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE {q}",
            q = sql::quote(&name)
        ),
    )
    .await;
    for login in logins {
        execute(
            &mut client,
            &format!(
                "IF SUSER_ID(N'{l}') IS NOT NULL DROP LOGIN {q}",
                l = login.replace('\'', "''"),
                q = sql::quote(login)
            ),
        )
        .await;
    }
    client.close().await.unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn spec(server: &Server, database: &str, user: &str) -> ConnectorSpec {
    ConnectorSpec {
        kind: DatabaseKind::Mssql,
        host: server.host.clone(),
        port: Some(server.port),
        database: database.into(),
        user: user.into(),
        tls: if server.trust_certificate {
            TlsMode::Require
        } else {
            TlsMode::VerifyFull
        },
        ca_file: None,
        source_timezone: None,
        schedule: None,
        statement_timeout_secs: 30,
        streams: Vec::new(),
    }
}

fn database(server: &Server, name: &str) -> MssqlDatabase {
    MssqlDatabase::new(
        &spec(server, name, &server.user),
        SecretString::from(server.password.clone()),
    )
    .unwrap()
}

fn table(name: &str, table: &str, cursor: Option<(&str, Option<&str>)>) -> DatabaseStream {
    DatabaseStream {
        name: name.into(),
        table: Some(table.into()),
        query: None,
        mapping: "unused.toml".into(),
        cursor: cursor.map(|(column, lookback)| CursorSpec {
            column: column.into(),
            lookback: lookback.map(str::to_owned),
            reconcile: None,
        }),
    }
}

fn query(name: &str, sql: &str) -> DatabaseStream {
    DatabaseStream {
        query: Some(sql.into()),
        table: None,
        ..table(name, "", None)
    }
}

fn request(key: &[&str], cursor: Option<&str>, batch_rows: usize) -> ReadRequest {
    ReadRequest {
        identity: SourceIdentity {
            tenant: "t".into(),
            connector: "pos".into(),
            stream: "pos_sales".into(),
        },
        key: key.iter().map(|k| k.to_string()).collect(),
        cursor: cursor.map(str::to_owned),
        batch_rows,
        columns: None,
        instant_columns: Vec::new(),
        decimal_columns: Vec::new(),
    }
}

async fn read_all(source: &mut dyn Source) -> Result<Vec<SourceBatch>, SourceError> {
    let mut batches = Vec::new();
    while let Some(batch) = source.next_batch().await? {
        batches.push(batch);
    }
    Ok(batches)
}

async fn open_error(db: &MssqlDatabase, stream: &DatabaseStream, key: &[&str]) -> SourceError {
    match db.open(stream, request(key, None, 100)).await {
        Ok(mut source) => read_all(source.as_mut())
            .await
            .expect_err("the read should fail"),
        Err(error) => error,
    }
}

fn texts(batches: &[SourceBatch], column: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let values = b.rows.frame.column(column).unwrap().str().unwrap().clone();
            (0..values.len())
                .map(|i| values.get(i).map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

const TYPES: &[&str] = &[
    "CREATE TABLE dbo.all_types (
        id INT NOT NULL PRIMARY KEY,
        tiny TINYINT, small SMALLINT, big BIGINT, flag BIT,
        amount DECIMAL(19,4), wide DECIMAL(38,10),
        price MONEY, small_price SMALLMONEY, fixed_price MONEY NOT NULL DEFAULT 0,
        day DATE, at DATETIME, at2 DATETIME2(7), small_at SMALLDATETIME,
        aware DATETIMEOFFSET(3),
        name NVARCHAR(50), code VARCHAR(10), initials CHAR(3), note NTEXT,
        guid UNIQUEIDENTIFIER, doc XML
    )",
    "INSERT INTO dbo.all_types VALUES (
        1, 255, -32768, -9223372036854775808, 1,
        -1234.5600, 123456789012345678901234567.8901234567,
        -755.0125, 214748.3647, 225179981368.5247,
        '2024-02-29', '2024-02-29T23:59:59.997', '2024-02-29T23:59:01.0050001', '2024-02-29T10:15:00',
        '2024-03-01T07:30:00.250+07:00',
        N'Kopi Susu ☕', 'ABC-1', 'XY', N'catatan',
        '6F9619FF-8B86-D011-B42D-00C04FC964FF', '<a>1</a>'
    )",
    "INSERT INTO dbo.all_types (id) VALUES (2)",
];

#[tokio::test]
async fn every_type_is_read_as_exact_canonical_text() {
    let Some(server) = server("every_type_is_read_as_exact_canonical_text") else {
        return;
    };
    let s = server.clone();
    with_database(&server, TYPES, &[], move |name| async move {
        let db = database(&s, &name);
        let stream = table("types", "dbo.all_types", None);
        let mut source = db.open(&stream, request(&["id"], None, 100)).await.unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert!(source.is_complete_read());
        assert_eq!(source.cursor(), None);
        let expected: &[(&str, &str)] = &[
            ("id", "1"),
            ("tiny", "255"),
            ("small", "-32768"),
            ("big", "-9223372036854775808"),
            ("flag", "true"),
            ("amount", "-1234.5600"),
            ("wide", "123456789012345678901234567.8901234567"),
            ("price", "-755.0125"),
            ("small_price", "214748.3647"),
            // The largest MONEY read exactly through the driver's float.
            ("fixed_price", "225179981368.5247"),
            ("day", "2024-02-29"),
            // DATETIME holds 1/300 s: .997 is 299/300, cut to microseconds.
            ("at", "2024-02-29 23:59:59.996666"),
            ("at2", "2024-02-29 23:59:01.005000"),
            ("small_at", "2024-02-29 10:15:00"),
            ("aware", "2024-03-01T00:30:00.250000Z"),
            ("name", "Kopi Susu ☕"),
            ("code", "ABC-1"),
            ("initials", "XY "),
            ("note", "catatan"),
            ("guid", "6F9619FF-8B86-D011-B42D-00C04FC964FF"),
            ("doc", "<a>1</a>"),
        ];
        for (column, text) in expected {
            let values = texts(&batches, column);
            assert_eq!(values[0].as_deref(), Some(*text), "{column}");
            if *column != "id" && *column != "fixed_price" {
                assert_eq!(values[1], None, "{column} of the row of NULLs");
            }
        }
        assert_eq!(texts(&batches, "fixed_price")[1].as_deref(), Some("0.0000"));
        let RowOrigin::Relation { relation, keys, .. } = &batches[0].origin else {
            panic!("a relation")
        };
        assert_eq!(relation, "dbo.all_types");
        assert_eq!(keys, &["1", "2"]);
        assert_eq!(batches[0].rows.origin_lines, [1, 2]);
    })
    .await;
}

#[tokio::test]
async fn incremental_reads_resume_from_the_committed_cursor_minus_the_look_back() {
    let Some(server) =
        server("incremental_reads_resume_from_the_committed_cursor_minus_the_look_back")
    else {
        return;
    };
    let setup = [
        "CREATE TABLE dbo.sales (sale_id INT NOT NULL, line INT NOT NULL, updated_at DATETIME2(0) NOT NULL, seq BIGINT NOT NULL, amount DECIMAL(10,2), PRIMARY KEY (sale_id, line))",
        "INSERT INTO dbo.sales VALUES
            (3, 1, '2024-03-01T10:00:00', 10, 1.00),
            (1, 2, '2024-03-01T10:00:00', 11, 2.00),
            (1, 1, '2024-03-01T10:00:00', 12, 3.00),
            (2, 1, '2024-03-01T10:05:00', 13, 4.00),
            (4, 1, '2024-03-01T10:30:00', 14, 5.00)",
    ];
    let s = server.clone();
    with_database(&server, &setup, &[], move |name| async move {
        let db = database(&s, &name);
        let by_time = table("pos_sales", "sales", Some(("updated_at", Some("10m"))));
        let mut source = db
            .open(&by_time, request(&["sale_id", "line"], None, 2))
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(
            batches.iter().map(|b| b.rows.len()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        // Cursor order, then key order within a cursor value.
        assert_eq!(
            texts(&batches, "amount"),
            some(&["3.00", "2.00", "1.00", "4.00", "5.00"])
        );
        let RowOrigin::Relation {
            key_columns, keys, ..
        } = &batches[1].origin
        else {
            panic!("a relation")
        };
        assert_eq!(key_columns, &["sale_id", "line"]);
        assert_eq!(keys, &["3,1", "2,1"]);
        assert_eq!(batches[1].rows.origin_lines, [3, 4]);
        assert_eq!(batches[1].describe(4), "sales row 4 (sale_id,line=2,1)");
        assert_eq!(source.cursor().as_deref(), Some("2024-03-01 10:30:00"));
        assert!(!source.is_complete_read());

        // From 10:30 less 10 minutes.
        let mut source = db
            .open(
                &by_time,
                request(&["sale_id", "line"], Some("2024-03-01 10:30:00"), 100),
            )
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "sale_id"), some(&["4"]));
        let mut source = db
            .open(
                &by_time,
                request(&["sale_id", "line"], Some("2024-03-01 10:12:00"), 100),
            )
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "sale_id"), some(&["2", "4"]));

        // An integer cursor goes back by a count; nothing new keeps the cursor.
        let by_seq = table("pos_sales", "dbo.sales", Some(("seq", Some("1"))));
        let mut source = db
            .open(&by_seq, request(&["sale_id", "line"], Some("13"), 100))
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "seq"), some(&["12", "13", "14"]));
        assert_eq!(source.cursor().as_deref(), Some("14"));
        let mut source = db
            .open(&by_seq, request(&["sale_id", "line"], Some("99"), 100))
            .await
            .unwrap();
        assert!(read_all(source.as_mut()).await.unwrap().is_empty());
        assert_eq!(source.cursor().as_deref(), Some("99"));

        // A query stream reads the same way.
        let from_query = DatabaseStream {
            cursor: Some(CursorSpec {
                column: "seq".into(),
                lookback: None,
                reconcile: None,
            }),
            ..query(
                "q",
                "SELECT sale_id, line, seq FROM dbo.sales WHERE amount > 1;",
            )
        };
        let mut source = db
            .open(&from_query, request(&["sale_id", "line"], Some("12"), 100))
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "seq"), some(&["12", "13", "14"]));
    })
    .await;
}

#[tokio::test]
async fn naive_times_are_placed_in_the_source_timezone() {
    let Some(server) = server("naive_times_are_placed_in_the_source_timezone") else {
        return;
    };
    let setup = [
        "CREATE TABLE dbo.sales (id INT PRIMARY KEY, at DATETIME2(3) NOT NULL)",
        "INSERT INTO dbo.sales VALUES (1, '2024-01-31T10:00:00'), (2, '2024-01-31T10:30:00.500')",
    ];
    let s = server.clone();
    with_database(&server, &setup, &[], move |name| async move {
        let spec = ConnectorSpec {
            source_timezone: Some("Asia/Jakarta".into()),
            ..spec(&s, &name, &s.user)
        };
        let db = MssqlDatabase::new(&spec, SecretString::from(s.password.clone())).unwrap();
        let stream = table("pos_sales", "dbo.sales", Some(("at", None)));
        let mut source = db.open(&stream, request(&["id"], None, 100)).await.unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(
            texts(&batches, "at"),
            some(&["2024-01-31T03:00:00Z", "2024-01-31T03:30:00.500000Z"])
        );
        let cursor = source.cursor().unwrap();
        assert_eq!(cursor, "2024-01-31T03:30:00.500000Z");
        let mut source = db
            .open(&stream, request(&["id"], Some(&cursor), 100))
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "id"), some(&["2"]));
        let tables = db.discover().await.unwrap();
        let at = &tables[0].columns[1];
        assert_eq!(at.canonical, Some(CanonicalType::TimestampTz));
    })
    .await;
}

#[tokio::test]
async fn floats_and_huge_money_are_refused_with_the_cast_that_reads_them() {
    let Some(server) = server("floats_and_huge_money_are_refused_with_the_cast_that_reads_them")
    else {
        return;
    };
    let setup = [
        "CREATE TABLE dbo.prices (id INT PRIMARY KEY, ratio FLOAT, total MONEY)",
        "INSERT INTO dbo.prices VALUES (1, 1.5, 922337203685477.5807)",
    ];
    let s = server.clone();
    with_database(&server, &setup, &[], move |name| async move {
        let db = database(&s, &name);
        let error = open_error(&db, &table("p", "dbo.prices", None), &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Type);
        assert!(error.message.contains("column 'ratio'"), "{error}");
        assert!(error.message.contains("FLOAT"), "{error}");
        assert!(error.message.contains("DECIMAL(19,4)"), "{error}");

        let money = query("p", "SELECT id, total FROM dbo.prices");
        let error = open_error(&db, &money, &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Type);
        assert!(error.message.contains("row 1 (id=1)"), "{error}");
        assert!(error.message.contains("CAST([total] AS DECIMAL(19,4))"), "{error}");

        let cast = query(
            "p",
            "SELECT id, CAST(ratio AS DECIMAL(19,4)) AS ratio, CAST(total AS DECIMAL(19,4)) AS total FROM dbo.prices",
        );
        let mut source = db.open(&cast, request(&["id"], None, 100)).await.unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "ratio"), some(&["1.5000"]));
        assert_eq!(texts(&batches, "total"), some(&["922337203685477.5807"]));
    })
    .await;
}

#[tokio::test]
async fn failures_are_classified_without_the_password() {
    let Some(server) = server("failures_are_classified_without_the_password") else {
        return;
    };
    let reader = unique("ls_reader");
    let reader_password = "Rd-pw-never-shown-7Qx!";
    let setup_login = format!(
        "CREATE LOGIN {} WITH PASSWORD = N'{reader_password}', CHECK_POLICY = OFF",
        sql::quote(&reader)
    );
    run_sql(&server, None, &[&setup_login]).await;
    let setup_user = format!("CREATE USER {q} FOR LOGIN {q}", q = sql::quote(&reader));
    let setup = [
        "CREATE TABLE dbo.sales (id INT PRIMARY KEY, amount DECIMAL(10,2))",
        "CREATE TABLE dbo.secret (id INT PRIMARY KEY)",
        "INSERT INTO dbo.sales VALUES (1, 1.00)",
        setup_user.as_str(),
    ];
    let s = server.clone();
    let login = reader.clone();
    with_database(&server, &setup, &[&reader], move |name| async move {
        // Wrong password.
        let wrong = MssqlDatabase::new(
            &spec(&s, &name, &s.user),
            SecretString::from("Wrong-pw-never-shown-9Zq"),
        )
        .unwrap();
        let error = wrong.check(&[]).await.unwrap_err();
        assert_eq!(error.kind, SourceErrorKind::Login, "{error}");
        assert!(
            !error.message.contains("Wrong-pw-never-shown-9Zq"),
            "{error}"
        );

        // A login without SELECT on the table.
        let limited = MssqlDatabase::new(
            &spec(&s, &name, &login),
            SecretString::from(reader_password),
        )
        .unwrap();
        let error = open_error(&limited, &table("s", "dbo.secret", None), &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Permission, "{error}");
        assert!(error.message.contains("GRANT SELECT"), "{error}");
        assert!(!error.message.contains(reader_password), "{error}");
        // ... and discover lists nothing it may not read.
        assert!(limited.discover().await.unwrap().is_empty());

        // A missing table, a missing cursor column, a query that does not parse.
        let db = database(&s, &name);
        let error = open_error(&db, &table("s", "dbo.nope", None), &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
        let error = open_error(&db, &table("s", "dbo.sales", Some(("nope", None))), &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
        assert!(error.message.contains("cursor column 'nope'"), "{error}");
        let error = open_error(&db, &query("s", "SELEC id FROM dbo.sales"), &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
        // A bracket in a table name stays inside the identifier.
        let error = open_error(
            &db,
            &table("s", "dbo.[sales]]; DROP TABLE dbo.sales; --]", None),
            &["id"],
        )
        .await;
        assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
        let check = db.check(&[table("s", "dbo.sales", None)]).await.unwrap();
        assert_eq!(check.streams, ["s: 1 rows readable in dbo.sales"]);
    })
    .await;
}

#[tokio::test]
async fn a_read_blocked_by_a_lock_times_out() {
    let Some(server) = server("a_read_blocked_by_a_lock_times_out") else {
        return;
    };
    let setup = [
        "CREATE TABLE dbo.sales (id INT PRIMARY KEY, amount DECIMAL(10,2))",
        "INSERT INTO dbo.sales VALUES (1, 1.00)",
    ];
    let s = server.clone();
    with_database(&server, &setup, &[], move |name| async move {
        // A writer holding an exclusive table lock in an open transaction.
        let mut writer = admin(&s, Some(&name)).await;
        execute(
            &mut writer,
            "BEGIN TRANSACTION; UPDATE dbo.sales WITH (TABLOCKX) SET amount = 2.00",
        )
        .await;
        let spec = ConnectorSpec {
            statement_timeout_secs: 2,
            ..spec(&s, &name, &s.user)
        };
        let db = MssqlDatabase::new(&spec, SecretString::from(s.password.clone())).unwrap();
        let started = std::time::Instant::now();
        let error = open_error(&db, &table("s", "dbo.sales", None), &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Timeout, "{error}");
        assert!(started.elapsed() < Duration::from_secs(20));
        execute(&mut writer, "ROLLBACK TRANSACTION").await;
        writer.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn discover_and_check_describe_the_database() {
    let Some(server) = server("discover_and_check_describe_the_database") else {
        return;
    };
    let setup = [
        "CREATE SCHEMA pos",
        "CREATE TABLE pos.sales (sale_id NVARCHAR(20) NOT NULL PRIMARY KEY, amount DECIMAL(19,4) NULL, at DATETIME2(7), ratio FLOAT, note VARCHAR(MAX), raw VARBINARY(16))",
        "INSERT INTO pos.sales (sale_id, amount) VALUES (N'S1', 1), (N'S2', 2), (N'S3', 3)",
        "CREATE VIEW pos.big_sales AS SELECT sale_id, amount FROM pos.sales WHERE amount > 1",
    ];
    let s = server.clone();
    with_database(&server, &setup, &[], move |name| async move {
        let db = database(&s, &name);
        let tables = db.discover().await.unwrap();
        let names: Vec<String> = tables
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        assert_eq!(names, ["pos.big_sales", "pos.sales"]);
        let sales = &tables[1];
        let described: Vec<(&str, &str, Option<CanonicalType>, bool)> = sales
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
            described,
            [
                ("sale_id", "nvarchar(20)", Some(CanonicalType::Text), false),
                (
                    "amount",
                    "decimal(19,4)",
                    Some(CanonicalType::Decimal),
                    true
                ),
                ("at", "datetime2(7)", Some(CanonicalType::Timestamp), true),
                ("ratio", "float", None, true),
                ("note", "varchar(max)", Some(CanonicalType::Text), true),
                ("raw", "varbinary(16)", None, true),
            ]
        );
        let check = db
            .check(&[
                table("big", "pos.big_sales", Some(("amount", None))),
                query("q", "SELECT sale_id FROM pos.sales"),
            ])
            .await
            .unwrap();
        assert!(check.server.starts_with("SQL Server "), "{}", check.server);
        assert_eq!(
            check.streams,
            [
                "big: 2 rows readable in pos.big_sales",
                "q: 3 rows readable in query of stream q"
            ]
        );
    })
    .await;
}

/// Needs no server: nothing listens on port 1 of the loopback address.
#[tokio::test]
async fn an_unused_port_is_unreachable() {
    let spec = ConnectorSpec {
        kind: DatabaseKind::Mssql,
        host: "127.0.0.1".into(),
        port: Some(1),
        database: "pos".into(),
        user: "reader".into(),
        tls: TlsMode::Require,
        ca_file: None,
        source_timezone: None,
        schedule: None,
        statement_timeout_secs: 30,
        streams: Vec::new(),
    };
    let db = MssqlDatabase::new(&spec, SecretString::from("pw-never-shown-7Qx")).unwrap();
    let error = db.check(&[]).await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Unreachable, "{error}");
    assert!(error.message.contains("127.0.0.1:1"), "{error}");
    assert!(error.message.contains("connection refused"), "{error}");
    assert!(!error.message.contains("pw-never-shown-7Qx"), "{error}");
    let error = db
        .open(&table("s", "dbo.sales", None), request(&["id"], None, 10))
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind, SourceErrorKind::Unreachable, "{error}");

    // A ca_file that cannot be read is a TLS failure before any connection.
    let missing_ca = ConnectorSpec {
        tls: TlsMode::VerifyFull,
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..spec
    };
    let db = MssqlDatabase::new(&missing_ca, SecretString::from("x")).unwrap();
    let error = db.discover().await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Tls, "{error}");
    assert!(error.message.contains("/nonexistent/ca.pem"), "{error}");
}
