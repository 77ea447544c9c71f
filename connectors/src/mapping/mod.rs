//! Stream mapping: rows → balanced postings, driven by a [`StreamDef`].
//!
//! Amount expressions and `when` conditions are SQL, translated to polars
//! expressions by `polars-sql`; account lookups become `when/then` chains. All of a
//! batch is evaluated by polars in one pass, then each row is checked and turned into
//! postings. Numeric columns are read as `Decimal(38, 8)` so no amount ever passes
//! through a float.

mod dates;
pub(crate) mod decimals;
mod errors;

use std::collections::HashSet;
use std::sync::Arc;

use chrono_tz::Tz;
use ledgersync_config::{AccountSpec, StreamDef};
use ledgersync_schemas::{excerpt, Amount, PostingFrame, ShortTexts};
use polars::prelude::*;

use crate::batch::{RowBatch, RowError};
use dates::DateParser;
pub use errors::MappingError;

/// Precision and scale numeric source columns are read at: wide enough to notice
/// digits beyond the four the ledger keeps, instead of rounding them away.
const SOURCE_DECIMAL: DataType = DataType::Decimal(SOURCE_PRECISION, SOURCE_SCALE);
pub(crate) const SOURCE_PRECISION: usize = 38;
pub(crate) const SOURCE_SCALE: usize = 8;

/// A set of account codes, looked up once per posting: polars' fast hasher rather
/// than the standard library's DoS-resistant one (codes come from the tenant's own
/// chart).
pub type AccountCodes = PlHashSet<String>;

/// What a mapping needs to know about the tenant.
#[derive(Debug, Clone)]
pub struct MapContext {
    pub timezone: Tz,
    pub currency: String,
    /// Codes of the tenant's chart of accounts in use.
    pub accounts: AccountCodes,
    /// Codes retired from the chart: still known, refused for new postings.
    pub retired: AccountCodes,
}

/// Postings and row errors of one batch.
#[derive(Debug)]
pub struct MappedBatch {
    pub postings: PostingFrame,
    pub errors: Vec<RowError>,
    /// Rows read, including those in error.
    pub rows: usize,
}

struct CompiledPosting {
    account: Expr,
    /// How to name the account's origin in an error.
    account_origin: String,
    /// The source column the account comes from (directly or through a lookup),
    /// read again to name the value that gave no account.
    account_column: Option<String>,
    /// For a lookup: how to fix a value it lacks.
    lookup_fix: Option<String>,
    amount: Expr,
    amount_text: String,
    /// True on rows where a divisor in `amount` is zero (none without a division).
    zero_divisor: Option<Expr>,
}

struct CompiledTemplate {
    when: Option<Expr>,
    postings: Vec<CompiledPosting>,
}

pub struct Mapper {
    def: StreamDef,
    ctx: MapContext,
    dates: DateParser,
    templates: Vec<CompiledTemplate>,
}

impl Mapper {
    /// Checks and compiles a stream definition; every expression is parsed here, so a
    /// broken definition fails before any row is read.
    pub fn compile(def: StreamDef, ctx: MapContext) -> Result<Mapper, MappingError> {
        let definition = |reason: String| MappingError::Definition {
            stream: def.name.clone(),
            reason,
        };
        if def.key.is_empty() {
            return Err(definition("`key` names no column".into()));
        }
        if def.templates.is_empty() {
            return Err(definition("no templates".into()));
        }
        let source_tz = match &def.date.source_timezone {
            Some(name) => name.parse().map_err(|_| {
                definition(format!(
                    "date.source_timezone '{name}' is not an IANA timezone"
                ))
            })?,
            None => ctx.timezone,
        };
        let sql = |field: String, text: &str| {
            polars::sql::sql_expr(text).map_err(|e| MappingError::Expression {
                stream: def.name.clone(),
                field,
                expr: text.to_string(),
                reason: e.to_string(),
            })
        };
        let mut templates = Vec::with_capacity(def.templates.len());
        for (t, template) in def.templates.iter().enumerate() {
            let when = template
                .when
                .as_deref()
                .map(|text| sql(format!("templates[{t}].when"), text))
                .transpose()?;
            let mut postings = Vec::with_capacity(template.postings.len());
            for (p, posting) in template.postings.iter().enumerate() {
                let mut lookup_fix = None;
                let (account, account_origin, account_column) = match &posting.account {
                    AccountSpec::Code(code) => (lit(code.clone()), format!("account {code}"), None),
                    AccountSpec::Column { column } => (
                        col(column.as_str()),
                        format!("column '{column}'"),
                        Some(column.clone()),
                    ),
                    AccountSpec::Lookup {
                        lookup,
                        column,
                        default,
                    } => {
                        let table = def.lookups.get(lookup).ok_or_else(|| {
                            definition(format!("templates[{t}].postings[{p}] uses lookup '{lookup}', which is not defined"))
                        })?;
                        let known: Vec<&str> = table.keys().map(String::as_str).take(10).collect();
                        let more = if table.len() > known.len() {
                            ", …"
                        } else {
                            ""
                        };
                        lookup_fix = Some(format!(
                            "lookup '{lookup}' has {}{more}; add the value to [lookups.{lookup}] or give the posting a `default`",
                            known.join(", ")
                        ));
                        (
                            lookup_expr(column, table, default.as_deref()),
                            format!("column '{column}' through lookup '{lookup}'"),
                            Some(column.clone()),
                        )
                    }
                };
                let field = format!("templates[{t}].postings[{p}].amount");
                let amount = sql(field.clone(), &posting.amount)?;
                // A text column in an amount fails the whole batch in polars with a
                // message about dtypes; said here, before any row is read.
                let mut used = Vec::new();
                amount_columns(&amount, &mut used);
                if let Some(column) = used.iter().find(|c| !def.numeric.contains(c)) {
                    return Err(definition(format!(
                        "{field} '{}' uses column '{column}', which is not declared numeric; \
                         add it to `numeric = [...]` so that its text is read as an exact decimal",
                        posting.amount
                    )));
                }
                let (amount, zero_divisor) = guard_divisions(amount);
                postings.push(CompiledPosting {
                    account,
                    account_origin,
                    account_column,
                    lookup_fix,
                    amount,
                    amount_text: posting.amount.clone(),
                    zero_divisor,
                });
            }
            templates.push(CompiledTemplate { when, postings });
        }
        let dates = DateParser::new(def.date.format.clone(), source_tz, ctx.timezone);
        Ok(Mapper {
            def,
            ctx,
            dates,
            templates,
        })
    }

    pub fn stream_name(&self) -> &str {
        &self.def.name
    }

    /// Refuses a source lacking a column the definition needs (optional ones aside).
    pub fn check_columns(&self, present: &[String]) -> Result<(), MappingError> {
        let missing: Vec<String> = self
            .required_columns()
            .into_iter()
            .filter(|c| !present.contains(c))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(MappingError::MissingColumns {
                stream: self.def.name.clone(),
                missing,
                present: present.to_vec(),
            })
        }
    }

    fn required_columns(&self) -> Vec<String> {
        let def = &self.def;
        let mut columns: Vec<String> = def.key.clone();
        columns.push(def.date.column.clone());
        columns.extend(
            def.branch
                .iter()
                .chain(&def.memo)
                .chain(&def.currency)
                .cloned(),
        );
        columns.extend(def.numeric.iter().cloned());
        for posting in def.templates.iter().flat_map(|t| &t.postings) {
            match &posting.account {
                AccountSpec::Code(_) => {}
                AccountSpec::Column { column } | AccountSpec::Lookup { column, .. } => {
                    columns.push(column.clone())
                }
            }
        }
        columns.sort();
        columns.dedup();
        columns.retain(|c| !def.optional.contains(c));
        columns
    }

    /// The columns a database read may hand over as instants rather than text (see
    /// `ReadRequest::instant_columns`): the date column, if the mapping reads it
    /// only as the date, and of `others` (a stream's cursor column) those it does
    /// not read at all. A date column also used as a key, branch, memo, account or
    /// in an expression, or read by an explicit `format`, is read as text, as files
    /// give it.
    pub fn instant_columns<'a>(&self, others: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let date = &self.def.date.column;
        let mut columns = Vec::new();
        if self.def.date.format.is_none() && !self.reads_as_text(date) {
            columns.push(date.clone());
        }
        for column in others {
            if column != date && !self.reads_as_text(column) && !columns.contains(column) {
                columns.push(column.clone());
            }
        }
        columns
    }

    /// The numeric columns the mapping reads only as amounts (not as a key, branch,
    /// memo, currency or account column): a database read may hand these over as
    /// exact decimals (see `ReadRequest::decimal_columns`).
    pub fn decimal_columns(&self) -> Vec<String> {
        let date = &self.def.date.column;
        self.def
            .numeric
            .iter()
            .filter(|column| *column != date && !self.text_roles().any(|named| named == *column))
            .cloned()
            .collect()
    }

    /// The columns the mapping names in a text role: key, branch, memo, currency,
    /// optional and account columns.
    fn text_roles(&self) -> impl Iterator<Item = &String> {
        let def = &self.def;
        let accounts = def
            .templates
            .iter()
            .flat_map(|t| &t.postings)
            .filter_map(|posting| match &posting.account {
                AccountSpec::Code(_) => None,
                AccountSpec::Column { column } | AccountSpec::Lookup { column, .. } => Some(column),
            });
        def.key
            .iter()
            .chain(&def.branch)
            .chain(&def.memo)
            .chain(&def.currency)
            .chain(&def.optional)
            .chain(accounts)
    }

    /// Whether the mapping reads `column` as text: as a key, branch, memo, currency,
    /// amount or account column, or in a `when` or amount expression.
    fn reads_as_text(&self, column: &str) -> bool {
        let mut named = self.text_roles().chain(&self.def.numeric);
        if named.any(|named| named == column) {
            return true;
        }
        let expressions = self.templates.iter().flat_map(|template| {
            template.when.iter().chain(
                template
                    .postings
                    .iter()
                    .flat_map(|posting| [&posting.account, &posting.amount]),
            )
        });
        let mut leaves = expressions.flat_map(|expr| expr.into_iter());
        leaves.any(|node| matches!(node, Expr::Column(name) if name.as_str() == column))
    }

    /// The columns whose values, joined, are a row's transaction key.
    pub fn key_columns(&self) -> &[String] {
        &self.def.key
    }

    /// The transaction keys of a batch holding at least the key columns, as
    /// [`Mapper::map`] keys the transactions of those rows; rows with an empty key
    /// have none.
    pub fn transaction_keys(&self, batch: &RowBatch) -> Result<Vec<String>, MappingError> {
        let keys = transaction_keys(&batch.frame, &self.def.key).map_err(|source| {
            MappingError::Polars {
                stream: self.def.name.clone(),
                source,
            }
        })?;
        Ok(keys
            .iter()
            .flatten()
            .filter(|key| !key.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Maps one batch. Row problems are returned as errors beside the postings of the
    /// good rows; only a failure of the definition itself is an `Err`.
    ///
    /// polars evaluates every expression over the whole batch; one pass over the rows
    /// then checks each row and notes, per posting, where its values are (row, account
    /// column, date) and its amount. The posting columns are gathered from the
    /// evaluated columns by those positions: no string is allocated per posting.
    pub fn map(&self, batch: RowBatch) -> Result<MappedBatch, MappingError> {
        let polars_error = |source| MappingError::Polars {
            stream: self.def.name.clone(),
            source,
        };
        let RowBatch {
            frame,
            origin_lines,
            mut errors,
        } = batch;
        let rows = origin_lines.len() + errors.len();
        if origin_lines.is_empty() {
            return Ok(MappedBatch {
                postings: PostingFrame::from_postings(&[]),
                errors,
                rows,
            });
        }
        let present: HashSet<String> = frame
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect();
        // Numeric text columns are read here rather than cast by polars: the same
        // decimals in a third of the time (see `decimals`). Others (absent, or typed
        // by a database) are cast below.
        let mut frame = frame;
        let mut text_columns = HashSet::new();
        // Decimals a database read typed: exact already, at the scale read here.
        let mut typed = HashSet::new();
        for column in &self.def.numeric {
            if frame
                .column(column)
                .is_ok_and(|c| c.dtype() == &SOURCE_DECIMAL)
            {
                typed.insert(column.clone());
                continue;
            }
            let Ok(text) = frame.column(column).and_then(|c| c.str()) else {
                continue;
            };
            let decimal =
                decimals::column(text, SOURCE_PRECISION, SOURCE_SCALE).map_err(polars_error)?;
            let text = text.clone().with_name(text_column(column).into());
            frame
                .with_column(text.into_column())
                .map_err(polars_error)?;
            frame
                .with_column(decimal.into_column())
                .map_err(polars_error)?;
            text_columns.insert(column.clone());
        }
        let mut lazy = frame.lazy();
        let absent: Vec<Expr> = self
            .def
            .optional
            .iter()
            .filter(|c| !present.contains(*c))
            .map(|c| lit(NULL).cast(DataType::String).alias(c.as_str()))
            .collect();
        if !absent.is_empty() {
            lazy = lazy.with_columns(absent);
        }
        // A numeric cell is bad when its text does not read as a decimal; the text
        // stays beside the decimal to name it.
        let mut numeric = Vec::new();
        for column in &self.def.numeric {
            if !text_columns.contains(column) && !typed.contains(column) {
                numeric.push(col(column.as_str()).alias(text_column(column)));
                numeric.push(
                    col(column.as_str())
                        .cast(SOURCE_DECIMAL)
                        .alias(column.as_str()),
                );
            }
        }
        lazy = lazy.with_columns(numeric);
        let mut outputs = Vec::new();
        for (t, template) in self.templates.iter().enumerate() {
            if let Some(when) = &template.when {
                outputs.push(when.clone().alias(format!("__when_{t}")));
            }
            for (p, posting) in template.postings.iter().enumerate() {
                outputs.push(
                    posting
                        .account
                        .clone()
                        .cast(DataType::String)
                        .alias(format!("__account_{t}_{p}")),
                );
                outputs.push(posting.amount.clone().alias(format!("__amount_{t}_{p}")));
                if let Some(zero) = &posting.zero_divisor {
                    outputs.push(zero.clone().alias(format!("__zero_divisor_{t}_{p}")));
                }
            }
        }
        let mut evaluated = lazy.with_columns(outputs).collect().map_err(polars_error)?;
        // One chunk per column: the row pass then reads each value straight from it.
        evaluated.rechunk_mut();
        for (t, template) in self.templates.iter().enumerate() {
            for (p, posting) in template.postings.iter().enumerate() {
                let dtype = evaluated
                    .column(&format!("__amount_{t}_{p}"))
                    .map_err(polars_error)?
                    .dtype();
                if !matches!(dtype, DataType::Decimal(..))
                    && !dtype.is_integer()
                    && !dtype.is_null()
                {
                    return Err(MappingError::InexactAmount {
                        stream: self.def.name.clone(),
                        expr: posting.amount_text.clone(),
                        dtype: dtype.to_string(),
                    });
                }
            }
        }
        let view = FrameView::new(&evaluated, &self.def, &self.templates).map_err(polars_error)?;

        let mut found = Found::with_capacity(origin_lines.len() * 3);
        // Sources repeat dates far more often than not: parse each text once a batch.
        let mut dates = DateTable::default();
        // Whether account codes are in the chart, remembered for the batch.
        let mut known_accounts = ShortTexts::default();
        let mut row_postings = Vec::new();
        for (row, &line) in origin_lines.iter().enumerate() {
            row_postings.clear();
            match self.map_row(
                &view,
                &mut dates,
                &mut known_accounts,
                row,
                &mut row_postings,
            ) {
                Ok(date) => {
                    for &(account_at, units) in &row_postings {
                        found.rows.push(row as IdxSize);
                        found.accounts.push(account_at);
                        found.dates.push(date);
                        found.amounts.push(units);
                        found.lines.push(line);
                    }
                }
                Err(reason) => errors.push(RowError { line, reason }),
            }
        }
        errors.sort_by_key(|e| e.line);
        let postings = found
            .gather(&view, dates, &self.ctx.currency)
            .map_err(polars_error)?;
        Ok(MappedBatch {
            postings,
            errors,
            rows,
        })
    }

    /// Checks one row and puts its postings (position in the stacked account column,
    /// ten-thousandths) in `postings`; returns the row's date in `dates`.
    fn map_row<'a>(
        &self,
        view: &FrameView<'a>,
        dates: &mut DateTable<'a>,
        known_accounts: &mut ShortTexts<bool>,
        row: usize,
        postings: &mut Vec<(IdxSize, i64)>,
    ) -> Result<IdxSize, String> {
        let def = &self.def;
        if let Some((column, text)) = view.bad_number(row) {
            return Err(
                match decimals::precision_lost(text.as_bytes(), SOURCE_SCALE) {
                    true => format!(
                        "amount '{}' in column '{column}' has more than {} decimal places; round it in the source",
                        excerpt(text),
                        ledgersync_schemas::AMOUNT_SCALE
                    ),
                    false => format!("non-numeric amount '{}' in column '{column}'", excerpt(text)),
                },
            );
        }
        for (column, part) in &view.key_parts {
            if part.get(row).is_none() {
                return Err(format!("key column '{column}' is empty"));
            }
        }
        let empty = || format!("date column '{}' is empty", def.date.column);
        let date = match view.date {
            DateColumn::Texts(texts) => {
                let text = texts.get(row).ok_or_else(empty)?;
                dates.index(texts, row, text, &self.dates)?
            }
            DateColumn::Instants(micros) => {
                let micros = micros.get(row).ok_or_else(empty)?;
                dates.instant(micros, &self.dates, &def.date.column)?
            }
        };
        if view.branch.and_then(|b| b.get(row)) == Some(ledgersync_schemas::BRANCH_TOTAL) {
            return Err(format!(
                "branch '{}' is reserved for all-branch totals",
                ledgersync_schemas::BRANCH_TOTAL
            ));
        }
        if let Some(currency) = view.currency.and_then(|c| c.get(row)) {
            if !currency.eq_ignore_ascii_case(&self.ctx.currency) {
                return Err(format!(
                    "currency {} differs from the tenant's {}; rows in other currencies need an exchange rate, which this stream does not define",
                    excerpt(currency),
                    self.ctx.currency
                ));
            }
        }

        let t = (0..self.templates.len())
            .find(|&t| self.templates[t].when.is_none() || view.when(t, row))
            .ok_or_else(|| "no template's `when` matches this row".to_string())?;
        let template = &self.templates[t];
        for (p, spec) in template.postings.iter().enumerate() {
            let accounts = &view.accounts[t][p];
            let account = accounts
                .values
                .get(row)
                .ok_or_else(|| view.no_account(spec, row))?;
            if !known_accounts.get(accounts.values, row, |code| {
                self.ctx.accounts.contains(code)
            }) {
                if self.ctx.retired.contains(account) {
                    return Err(format!(
                        "account '{}' (from {}) is retired from the chart; post to an account \
                         in use, or import the account again to bring it back",
                        excerpt(account),
                        spec.account_origin
                    ));
                }
                return Err(format!(
                    "unknown account '{}' (from {})",
                    excerpt(account),
                    spec.account_origin
                ));
            }
            if view.zero_divisors[t][p]
                .as_ref()
                .is_some_and(|zero| zero[row])
            {
                return Err(format!(
                    "amount '{}' divides by zero on this row",
                    spec.amount_text
                ));
            }
            let amount = view
                .amount(t, p, row)
                .map_err(|e| format!("amount '{}': {e}", spec.amount_text))?
                .ok_or_else(|| format!("amount '{}' is empty for this row", spec.amount_text))?;
            if amount.is_zero() {
                continue;
            }
            postings.push((accounts.offset + row as IdxSize, amount.units()));
        }
        Ok(date)
    }
}

/// The columns whose values flow into an amount: operands of arithmetic, function
/// arguments and the branches of a `CASE`, not the columns its conditions compare
/// (`CASE WHEN kind = 'fee' THEN amount ELSE 0 END` uses `amount` only).
fn amount_columns(expr: &Expr, into: &mut Vec<String>) {
    match expr {
        Expr::Column(name) => into.push(name.to_string()),
        Expr::BinaryExpr {
            left,
            op:
                Operator::Plus
                | Operator::Minus
                | Operator::Multiply
                | Operator::RustDivide
                | Operator::TrueDivide
                | Operator::FloorDivide
                | Operator::Modulus,
            right,
        } => {
            amount_columns(left, into);
            amount_columns(right, into);
        }
        Expr::Ternary { truthy, falsy, .. } => {
            amount_columns(truthy, into);
            amount_columns(falsy, into);
        }
        Expr::Alias(inner, _) | Expr::KeepName(inner) => amount_columns(inner, into),
        Expr::Function { input, .. } => input.iter().for_each(|e| amount_columns(e, into)),
        // Casts convert on purpose; other forms have no place in an amount.
        _ => {}
    }
}

/// `amount` with every divisor that is zero replaced by one, and the condition that
/// some divisor is zero. polars fails a whole batch on a decimal division by zero
/// (for every row, whichever template the row takes); guarded, the batch evaluates
/// and the rows whose template divides by zero are refused one by one.
fn guard_divisions(amount: Expr) -> (Expr, Option<Expr>) {
    let mut divisors = Vec::new();
    // Children are rewritten before their parents: a divisor holding a division is
    // guarded itself.
    let guarded = amount.map_expr(|expr| match expr {
        Expr::BinaryExpr {
            left,
            op: op @ (Operator::TrueDivide | Operator::RustDivide | Operator::FloorDivide),
            right,
        } => {
            let divisor = Arc::unwrap_or_clone(right);
            let zero = divisor.clone().eq(lit(0)).fill_null(lit(false));
            divisors.push(zero.clone());
            Expr::BinaryExpr {
                left,
                op,
                right: Arc::new(when(zero).then(lit(1)).otherwise(divisor)),
            }
        }
        other => other,
    });
    let zero_divisor = divisors.into_iter().reduce(|any, zero| any.or(zero));
    (guarded, zero_divisor)
}

fn text_column(column: &str) -> String {
    format!("__text_{column}")
}

/// `CASE lower(column) WHEN key THEN account … ELSE default END`; keys match
/// case-insensitively and ignoring surrounding spaces. Evaluated as one pass with
/// a hash table rather than as a chain of `when`s, each of which would lower-case
/// and compare the whole column again; a batch's few distinct texts are each
/// looked up once.
fn lookup_expr(
    column: &str,
    table: &std::collections::BTreeMap<String, String>,
    default: Option<&str>,
) -> Expr {
    let table: Arc<PlHashMap<String, String>> = Arc::new(
        table
            .iter()
            .map(|(key, code)| (key.trim().to_lowercase(), code.clone()))
            .collect(),
    );
    let default: Option<Arc<str>> = default.map(Arc::from);
    col(column).cast(DataType::String).map(
        move |values| {
            let texts = values.str()?;
            let mut found: PlHashMap<&str, Option<&str>> = PlHashMap::new();
            let codes: StringChunked = texts
                .iter()
                .map(|text| match text {
                    None => default.as_deref(),
                    Some(text) => *found.entry(text).or_insert_with(|| {
                        table
                            .get(&text.trim().to_lowercase())
                            .map(String::as_str)
                            .or(default.as_deref())
                    }),
                })
                .collect();
            Ok(codes.with_name(values.name().clone()).into_column())
        },
        |_, field| Ok(Field::new(field.name().clone(), DataType::String)),
    )
}

/// The distinct date texts of a batch, parsed once each, as the posting columns
/// they become.
struct DateTable<'a> {
    parsed: PlHashMap<&'a str, Result<IdxSize, String>>,
    /// Short texts that parsed, by view.
    short: ShortTexts<IdxSize>,
    entries: DateEntries,
    /// The last instant of [`DateTable::instant`] and its entry.
    last_instant: Option<(i64, IdxSize)>,
}

/// The dates of a batch's [`DateTable`], as the posting columns they become.
struct DateEntries {
    /// Days since 1970-01-01, as a polars `Date`.
    dates: Vec<i32>,
    /// The instant of each date, when the source gave one, as RFC 3339 text.
    occurred: StringChunkedBuilder,
    /// The instant being written, reused for each.
    instant_text: String,
}

impl DateEntries {
    /// Adds a date (and its instant) and returns its entry.
    fn add(&mut self, (date, instant): dates::LocalDate) -> IdxSize {
        self.dates.push(date.to_epoch_days());
        match instant {
            Some(instant) => {
                self.instant_text.clear();
                ledgersync_schemas::time_text::push_rfc3339_utc(&mut self.instant_text, instant);
                self.occurred.append_value(self.instant_text.as_str());
            }
            None => self.occurred.append_null(),
        }
        (self.dates.len() - 1) as IdxSize
    }
}

impl Default for DateTable<'_> {
    fn default() -> Self {
        DateTable {
            parsed: PlHashMap::default(),
            short: ShortTexts::default(),
            entries: DateEntries {
                dates: Vec::new(),
                occurred: StringChunkedBuilder::new(
                    ledgersync_schemas::posting_column::OCCURRED_AT.into(),
                    0,
                ),
                instant_text: String::new(),
            },
            last_instant: None,
        }
    }
}

impl<'a> DateTable<'a> {
    /// The date of an instant given as microseconds since 1970 (UTC) by a database
    /// read; rows in a row with the same instant share one entry.
    fn instant(
        &mut self,
        micros: i64,
        parser: &DateParser,
        column: &str,
    ) -> Result<IdxSize, String> {
        if let Some((last, index)) = self.last_instant {
            if last == micros {
                return Ok(index);
            }
        }
        // The years a date's text has (as a text column's instant would be refused).
        let instant = chrono::DateTime::from_timestamp_micros(micros)
            .filter(|t| (1..=9999).contains(&chrono::Datelike::year(t)))
            .ok_or_else(|| {
                format!("date column '{column}' holds an instant outside the years 0001-9999")
            })?;
        let index = self.entries.add(parser.localize(instant));
        self.last_instant = Some((micros, index));
        Ok(index)
    }

    /// The date of row `row` of `texts`, whose text is `text`. A short text is
    /// looked up by its view (one integer) first.
    fn index(
        &mut self,
        texts: Texts<'a>,
        row: usize,
        text: &'a str,
        parser: &DateParser,
    ) -> Result<IdxSize, String> {
        let DateTable {
            parsed,
            short,
            entries,
            ..
        } = self;
        short.try_get(texts, row, |_| match parsed.get(text) {
            Some(known) => known.clone(),
            None => {
                let found = parser.parse(text).map(|local| entries.add(local));
                parsed.insert(text, found.clone());
                found
            }
        })
    }
}

/// Where each posting of a batch takes its values from, in posting order.
struct Found {
    rows: Vec<IdxSize>,
    /// Position in the account columns stacked template by template.
    accounts: Vec<IdxSize>,
    /// Position in the batch's [`DateTable`].
    dates: Vec<IdxSize>,
    amounts: Vec<i64>,
    lines: Vec<u64>,
}

impl Found {
    fn with_capacity(capacity: usize) -> Found {
        Found {
            rows: Vec::with_capacity(capacity),
            accounts: Vec::with_capacity(capacity),
            dates: Vec::with_capacity(capacity),
            amounts: Vec::with_capacity(capacity),
            lines: Vec::with_capacity(capacity),
        }
    }

    /// The posting columns, gathered from the evaluated batch.
    fn gather(
        self,
        view: &FrameView<'_>,
        dates: DateTable<'_>,
        currency: &str,
    ) -> PolarsResult<PostingFrame> {
        use ledgersync_schemas::posting_column::*;
        let len = self.rows.len();
        // Every row one posting, in order (a journal): the columns are taken as they are.
        let one_per_row = len == view.height
            && self
                .rows
                .iter()
                .enumerate()
                .all(|(posting, &row)| row as usize == posting);
        let rows = IdxCa::from_vec("rows".into(), self.rows);
        let by_row = |column: &StringChunked, name: &str| -> PolarsResult<Column> {
            let taken = if one_per_row {
                column.clone()
            } else {
                column.take(&rows)?
            };
            Ok(taken.with_name(name.into()).into_column())
        };
        let text_or_empty = |column: &Option<StringChunked>, name: &str| match column {
            Some(values) if values.null_count() == 0 => by_row(values, name),
            Some(values) => by_row(
                &values.iter().map(|v| Some(v.unwrap_or_default())).collect(),
                name,
            ),
            None => Ok(StringChunked::full(name.into(), "", len).into_column()),
        };
        let accounts = if one_per_row && view.stacked_accounts.len() == view.height {
            view.stacked_accounts.clone()
        } else {
            view.stacked_accounts
                .take(&IdxCa::from_vec("accounts".into(), self.accounts))?
        };
        let date_at = IdxCa::from_vec("dates".into(), self.dates);
        let date_table = Int32Chunked::from_vec(DATE.into(), dates.entries.dates);
        let occurred_table: StringChunked = dates.entries.occurred.finish();
        let frame = DataFrame::new(
            len,
            vec![
                by_row(&view.key, KEY)?,
                date_table.take(&date_at)?.into_date().into_column(),
                text_or_empty(&view.branch_column, BRANCH)?,
                text_or_empty(&view.memo_column, MEMO)?,
                occurred_table.take(&date_at)?.into_column(),
                accounts.with_name(ACCOUNT.into()).into_column(),
                Int64Chunked::from_vec(AMOUNT.into(), self.amounts).into_column(),
                StringChunked::full(CURRENCY.into(), currency, len).into_column(),
                // Rows in other currencies are refused: every original is the amount.
                Column::full_null(ORIGINAL_AMOUNT.into(), len, &DataType::Int64),
                UInt64Chunked::from_vec(LINE.into(), self.lines).into_column(),
            ],
        )?;
        PostingFrame::from_frame(frame)
    }
}

/// The one chunk of an evaluated column, which the row pass reads in place (the
/// batch is rechunked before it).
fn one_chunk<T: PolarsDataType>(column: &ChunkedArray<T>) -> PolarsResult<&T::Array> {
    polars_ensure!(
        column.chunks().len() == 1,
        ComputeError: "column '{}' is in {} chunks, not one", column.name(), column.chunks().len()
    );
    Ok(column.downcast_as_array())
}

/// A text column of an evaluated batch, read row by row without copying.
type Texts<'a> = &'a ledgersync_schemas::TextArray;

/// The date column of an evaluated batch: text, or instants a database read typed.
#[derive(Clone, Copy)]
enum DateColumn<'a> {
    Texts(Texts<'a>),
    /// Microseconds since 1970, UTC.
    Instants(&'a <Int64Type as PolarsDataType>::Array),
}

impl<'a> DateColumn<'a> {
    fn of(column: &'a Column) -> PolarsResult<DateColumn<'a>> {
        match column.dtype() {
            DataType::Datetime(TimeUnit::Microseconds, Some(zone)) if zone.eq(&TimeZone::UTC) => {
                Ok(DateColumn::Instants(one_chunk(
                    column.datetime()?.physical(),
                )?))
            }
            _ => Ok(DateColumn::Texts(one_chunk(column.str()?)?)),
        }
    }
}

/// An account column of an evaluated batch: the account of each row, and where the
/// column starts in [`FrameView::stacked_accounts`].
struct AccountColumn<'a> {
    values: Texts<'a>,
    offset: IdxSize,
}

/// An amount column of an evaluated batch, typed once.
enum AmountColumn<'a> {
    /// Read straight from the evaluated column's one chunk.
    Decimal(&'a <Int128Type as PolarsDataType>::Array, u32),
    Integer(Vec<Option<i64>>),
    Null,
}

/// Each row's transaction key: the key column, or the key columns joined by `|`;
/// null where a key column is.
fn transaction_keys(frame: &DataFrame, key: &[String]) -> PolarsResult<StringChunked> {
    if let [single] = key {
        return Ok(frame.column(single)?.str()?.clone());
    }
    let parts = key
        .iter()
        .map(|column| frame.column(column)?.str())
        .collect::<PolarsResult<Vec<_>>>()?;
    Ok((0..frame.height())
        .map(|row| {
            let parts: Option<Vec<&str>> = parts.iter().map(|part| part.get(row)).collect();
            parts.map(|parts| parts.join("|"))
        })
        .collect::<StringChunked>())
}

/// The evaluated batch's columns as the row pass reads them, resolved once per batch
/// so that reading a row is a few slice lookups.
struct FrameView<'a> {
    /// The batch's columns, read again only to explain a row's error.
    frame: &'a DataFrame,
    height: usize,
    /// The transaction key: the key column, or the key columns joined by `|`.
    key: StringChunked,
    key_parts: Vec<(&'a str, Texts<'a>)>,
    date: DateColumn<'a>,
    /// None when the stream has no such column.
    branch: Option<Texts<'a>>,
    currency: Option<Texts<'a>>,
    branch_column: Option<StringChunked>,
    memo_column: Option<StringChunked>,
    /// Per numeric column: the rows whose text is not a number, and the texts.
    bad_numbers: Vec<(&'a str, Vec<bool>, &'a StringChunked)>,
    whens: Vec<Option<Vec<Option<bool>>>>,
    /// Per template and posting.
    accounts: Vec<Vec<AccountColumn<'a>>>,
    stacked_accounts: StringChunked,
    amounts: Vec<Vec<AmountColumn<'a>>>,
    /// Per template and posting with a division: the rows where a divisor is zero.
    zero_divisors: Vec<Vec<Option<Vec<bool>>>>,
}

impl<'a> FrameView<'a> {
    fn new(
        frame: &'a DataFrame,
        def: &'a StreamDef,
        templates: &[CompiledTemplate],
    ) -> PolarsResult<Self> {
        let text = |name: &str| -> PolarsResult<&'a StringChunked> { frame.column(name)?.str() };
        let mut key_parts = Vec::with_capacity(def.key.len());
        for column in &def.key {
            key_parts.push((column.as_str(), one_chunk(text(column)?)?));
        }
        let key = transaction_keys(frame, &def.key)?;
        let optional = |column: &Option<String>| -> PolarsResult<Option<StringChunked>> {
            column.as_deref().map(|c| text(c).cloned()).transpose()
        };
        let branch_column = optional(&def.branch)?;
        let mut bad_numbers = Vec::new();
        for column in &def.numeric {
            // A decimal column a database read typed has no text and no bad cell.
            let Ok(texts) = frame.column(&text_column(column)) else {
                continue;
            };
            let texts = texts.str()?;
            let bad = frame.column(column)?.is_null() & texts.is_not_null();
            if bad.any() {
                bad_numbers.push((
                    column.as_str(),
                    bad.iter().map(|b| b.unwrap_or(false)).collect(),
                    texts,
                ));
            }
        }
        let mut whens = Vec::new();
        let mut accounts = Vec::new();
        let mut amounts = Vec::new();
        let mut zero_divisors = Vec::new();
        let mut stacked_accounts: Option<StringChunked> = None;
        for (t, template) in templates.iter().enumerate() {
            whens.push(match template.when {
                Some(_) => Some(
                    frame
                        .column(&format!("__when_{t}"))?
                        .bool()?
                        .iter()
                        .collect(),
                ),
                None => None,
            });
            let mut template_accounts = Vec::new();
            let mut template_amounts = Vec::new();
            let mut template_zero_divisors = Vec::new();
            for p in 0..template.postings.len() {
                let column = text(&format!("__account_{t}_{p}"))?;
                let offset = match &mut stacked_accounts {
                    None => {
                        stacked_accounts = Some(column.clone());
                        0
                    }
                    Some(stacked) => {
                        let offset = stacked.len();
                        stacked.append(column)?;
                        offset
                    }
                };
                template_accounts.push(AccountColumn {
                    values: one_chunk(column)?,
                    offset: offset as IdxSize,
                });
                let column = frame.column(&format!("__amount_{t}_{p}"))?;
                template_zero_divisors.push(match template.postings[p].zero_divisor {
                    Some(_) => Some(
                        frame
                            .column(&format!("__zero_divisor_{t}_{p}"))?
                            .bool()?
                            .iter()
                            .map(|zero| zero.unwrap_or(false))
                            .collect(),
                    ),
                    None => None,
                });
                template_amounts.push(match column.dtype() {
                    DataType::Decimal(_, scale) => AmountColumn::Decimal(
                        one_chunk(column.decimal()?.physical())?,
                        *scale as u32,
                    ),
                    DataType::Null => AmountColumn::Null,
                    dtype if dtype.is_integer() => AmountColumn::Integer(
                        column.cast(&DataType::Int64)?.i64()?.iter().collect(),
                    ),
                    // Refused by the caller before any row is read.
                    _ => AmountColumn::Null,
                });
            }
            accounts.push(template_accounts);
            amounts.push(template_amounts);
            zero_divisors.push(template_zero_divisors);
        }
        let mut stacked_accounts =
            stacked_accounts.unwrap_or_else(|| StringChunked::full_null("".into(), 0));
        stacked_accounts.rechunk_mut();
        let optional_values = |column: &Option<String>| -> PolarsResult<Option<Texts<'a>>> {
            column.as_deref().map(|c| one_chunk(text(c)?)).transpose()
        };
        Ok(FrameView {
            frame,
            height: frame.height(),
            key,
            key_parts,
            date: DateColumn::of(frame.column(&def.date.column)?)?,
            branch: optional_values(&def.branch)?,
            currency: optional_values(&def.currency)?,
            branch_column,
            memo_column: optional(&def.memo)?,
            bad_numbers,
            whens,
            accounts,
            stacked_accounts,
            amounts,
            zero_divisors,
        })
    }

    /// Why `spec` gave row `row` no account, naming the value that missed.
    fn no_account(&self, spec: &CompiledPosting, row: usize) -> String {
        let Some(column) = &spec.account_column else {
            return format!("no account from {}", spec.account_origin);
        };
        let value = self
            .frame
            .column(column)
            .and_then(|c| c.get(row))
            .ok()
            .filter(|v| !v.is_null())
            .map(|v| match v.get_str() {
                Some(text) => text.to_string(),
                None => v.to_string(),
            });
        match (value, &spec.lookup_fix) {
            (Some(value), Some(fix)) if !value.trim().is_empty() => {
                format!("no account for '{value}' in {}: {fix}", spec.account_origin)
            }
            _ => format!(
                "no account from {}: the column is empty",
                spec.account_origin
            ),
        }
    }

    /// The first numeric column whose value is not a number, with its text.
    fn bad_number(&self, row: usize) -> Option<(&'a str, &'a str)> {
        self.bad_numbers.iter().find_map(|(column, bad, texts)| {
            if bad[row] {
                texts.get(row).map(|text| (*column, text))
            } else {
                None
            }
        })
    }

    fn when(&self, t: usize, row: usize) -> bool {
        self.whens[t].as_ref().and_then(|w| w[row]).unwrap_or(false)
    }

    fn amount(&self, t: usize, p: usize, row: usize) -> Result<Option<Amount>, String> {
        let value = match &self.amounts[t][p] {
            AmountColumn::Decimal(mantissas, scale) => mantissas.get(row).map(|m| (m, *scale)),
            AmountColumn::Integer(integers) => integers[row].map(|v| (i128::from(v), 0)),
            AmountColumn::Null => None,
        };
        value
            .map(|(mantissa, scale)| exact_units(mantissa, scale))
            .transpose()
    }
}

/// A decimal as ten-thousandths, exactly: the common case in integer arithmetic,
/// anything else (more digits, overflow) through [`Amount::from_scaled`] and its
/// wording.
fn exact_units(mantissa: i128, scale: u32) -> Result<Amount, String> {
    const SCALE: u32 = ledgersync_schemas::AMOUNT_SCALE;
    // At the source columns' own scale the division is by a constant, which the
    // compiler turns into a multiplication (by a divisor known only at run time it
    // takes tens of cycles, for every posting).
    const SOURCE_DIVISOR: i64 = 10i64.pow(SOURCE_SCALE as u32 - SCALE);
    if scale as usize == SOURCE_SCALE {
        if let Ok(small) = i64::try_from(mantissa) {
            if small % SOURCE_DIVISOR == 0 {
                return Ok(Amount::from_units(small / SOURCE_DIVISOR));
            }
        }
    }
    let units = if scale >= SCALE {
        let divisor = 10i128.pow(scale - SCALE);
        // 64-bit division where the values allow: several times cheaper than 128.
        match (i64::try_from(mantissa), i64::try_from(divisor)) {
            (Ok(small), Ok(divisor)) => (small % divisor == 0).then(|| i128::from(small / divisor)),
            _ => (mantissa % divisor == 0).then(|| mantissa / divisor),
        }
    } else {
        mantissa.checked_mul(10i128.pow(SCALE - scale))
    };
    match units.map(i64::try_from) {
        Some(Ok(units)) => Ok(Amount::from_units(units)),
        _ => Amount::from_scaled(mantissa, scale).map_err(|e| e.to_string()),
    }
}
#[cfg(test)]
mod tests;
