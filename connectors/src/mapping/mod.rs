//! Stream mapping: rows → balanced postings, driven by a [`StreamDef`].
//!
//! Amount expressions and `when` conditions are SQL, translated to polars
//! expressions by `polars-sql`; account lookups become `when/then` chains. All of a
//! batch is evaluated by polars in one pass, then each row is checked and turned into
//! postings. Numeric columns are read as `Decimal(38, 8)` so no amount ever passes
//! through a float.

mod dates;
mod errors;

use std::collections::{HashMap, HashSet};

use chrono_tz::Tz;
use ledgersync_config::{AccountSpec, StreamDef};
use ledgersync_schemas::{Amount, Posting};
use polars::prelude::*;

use crate::batch::{RowBatch, RowError};
use dates::DateParser;
pub use errors::MappingError;

/// Precision and scale numeric source columns are read at: wide enough to notice
/// digits beyond the four the ledger keeps, instead of rounding them away.
const SOURCE_DECIMAL: DataType = DataType::Decimal(38, 8);

/// What a mapping needs to know about the tenant.
#[derive(Debug, Clone)]
pub struct MapContext {
    pub timezone: Tz,
    pub currency: String,
    /// Codes of the tenant's chart of accounts.
    pub accounts: HashSet<String>,
}

/// Postings and row errors of one batch.
#[derive(Debug, Default)]
pub struct MappedBatch {
    pub postings: Vec<Posting>,
    pub errors: Vec<RowError>,
    /// Rows read, including those in error.
    pub rows: usize,
}

struct CompiledPosting {
    account: Expr,
    /// How to name the account's origin in an error.
    account_origin: String,
    amount: Expr,
    amount_text: String,
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
                let (account, account_origin) = match &posting.account {
                    AccountSpec::Code(code) => (lit(code.clone()), format!("account {code}")),
                    AccountSpec::Column { column } => {
                        (col(column.as_str()), format!("column '{column}'"))
                    }
                    AccountSpec::Lookup {
                        lookup,
                        column,
                        default,
                    } => {
                        let table = def.lookups.get(lookup).ok_or_else(|| {
                            definition(format!("templates[{t}].postings[{p}] uses lookup '{lookup}', which is not defined"))
                        })?;
                        (
                            lookup_expr(column, table, default.as_deref()),
                            format!("column '{column}' through lookup '{lookup}'"),
                        )
                    }
                };
                postings.push(CompiledPosting {
                    account,
                    account_origin,
                    amount: sql(
                        format!("templates[{t}].postings[{p}].amount"),
                        &posting.amount,
                    )?,
                    amount_text: posting.amount.clone(),
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

    /// Maps one batch. Row problems are returned as errors beside the postings of the
    /// good rows; only a failure of the definition itself is an `Err`.
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
                postings: Vec::new(),
                errors,
                rows,
            });
        }
        let present: HashSet<String> = frame
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect();
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
        // Keep each numeric column's text beside its decimal, to name bad values.
        let mut numeric = Vec::new();
        for column in &self.def.numeric {
            numeric.push(col(column.as_str()).alias(text_column(column)));
            numeric.push(
                col(column.as_str())
                    .cast(SOURCE_DECIMAL)
                    .alias(column.as_str()),
            );
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
            }
        }
        let evaluated = lazy.with_columns(outputs).collect().map_err(polars_error)?;
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

        let mut postings = Vec::with_capacity(origin_lines.len() * 3);
        // Sources repeat dates far more often than not: parse each text once a batch.
        let mut dates = HashMap::new();
        for (row, &line) in origin_lines.iter().enumerate() {
            match self.map_row(&view, &mut dates, row, line) {
                Ok(mut row_postings) => postings.append(&mut row_postings),
                Err(reason) => errors.push(RowError { line, reason }),
            }
        }
        errors.sort_by_key(|e| e.line);
        Ok(MappedBatch {
            postings,
            errors,
            rows,
        })
    }

    fn map_row<'a>(
        &self,
        view: &FrameView<'a>,
        dates: &mut HashMap<&'a str, Result<dates::LocalDate, String>>,
        row: usize,
        line: u64,
    ) -> Result<Vec<Posting>, String> {
        let def = &self.def;
        if let Some((column, text)) = view.bad_number(row) {
            return Err(format!("non-numeric amount '{text}' in column '{column}'"));
        }
        let mut key_parts = Vec::with_capacity(def.key.len());
        for column in &def.key {
            let part = view
                .text(column, row)
                .ok_or_else(|| format!("key column '{column}' is empty"))?;
            key_parts.push(part);
        }
        let source_key = key_parts.join("|");
        let date_text = view
            .text(&def.date.column, row)
            .ok_or_else(|| format!("date column '{}' is empty", def.date.column))?;
        let (date, instant) = dates
            .entry(date_text)
            .or_insert_with(|| self.dates.parse(date_text))
            .clone()?;
        let optional_text = |column: &Option<String>| {
            column
                .as_deref()
                .and_then(|c| view.text(c, row))
                .unwrap_or_default()
                .to_string()
        };
        let branch = optional_text(&def.branch);
        if branch == ledgersync_schemas::BRANCH_TOTAL {
            return Err(format!(
                "branch '{branch}' is reserved for all-branch totals"
            ));
        }
        let memo = optional_text(&def.memo);
        let currency = optional_text(&def.currency);
        if !currency.is_empty() && !currency.eq_ignore_ascii_case(&self.ctx.currency) {
            return Err(format!(
                "currency {currency} differs from the tenant's {}; rows in other currencies need an exchange rate, which this stream does not define",
                self.ctx.currency
            ));
        }

        let t = (0..self.templates.len())
            .find(|&t| self.templates[t].when.is_none() || view.when(t, row))
            .ok_or_else(|| "no template's `when` matches this row".to_string())?;
        let template = &self.templates[t];
        let mut postings = Vec::with_capacity(template.postings.len());
        for (p, spec) in template.postings.iter().enumerate() {
            let account = view
                .account(t, p, row)
                .ok_or_else(|| format!("no account from {}", spec.account_origin))?;
            if !self.ctx.accounts.contains(account) {
                return Err(format!(
                    "unknown account '{account}' (from {})",
                    spec.account_origin
                ));
            }
            let amount = view
                .amount(t, p, row)
                .map_err(|e| format!("amount '{}': {e}", spec.amount_text))?
                .ok_or_else(|| format!("amount '{}' is empty for this row", spec.amount_text))?;
            if amount.is_zero() {
                continue;
            }
            postings.push(Posting {
                source_key: source_key.clone(),
                origin_line: line,
                date,
                branch: branch.clone(),
                memo: memo.clone(),
                occurred_at: instant.map(|i| i.to_rfc3339()),
                account: account.to_string(),
                amount,
                currency: self.ctx.currency.clone(),
                original_amount: amount,
            });
        }
        Ok(postings)
    }
}

fn text_column(column: &str) -> String {
    format!("__text_{column}")
}

/// `CASE lower(column) WHEN key THEN account … ELSE default END`; keys match
/// case-insensitively and ignoring surrounding spaces.
fn lookup_expr(
    column: &str,
    table: &std::collections::BTreeMap<String, String>,
    default: Option<&str>,
) -> Expr {
    let fallback = match default {
        Some(code) => lit(code.to_string()),
        None => lit(NULL).cast(DataType::String),
    };
    let value = col(column).cast(DataType::String).str().to_lowercase();
    table.iter().rev().fold(fallback, |otherwise, (key, code)| {
        when(value.clone().eq(lit(key.trim().to_lowercase())))
            .then(lit(code.clone()))
            .otherwise(otherwise)
    })
}

/// An amount column of an evaluated batch, typed once.
enum AmountColumn<'a> {
    Decimal(&'a DecimalChunked, u32),
    Integer(Int64Chunked),
    Null,
}

/// Typed access to an evaluated batch's columns, resolved once per batch so that
/// reading a row is a few array lookups.
struct FrameView<'a> {
    texts: HashMap<&'a str, &'a StringChunked>,
    /// Numeric columns whose decimal is null, by column.
    numeric_nulls: Vec<(&'a str, BooleanChunked)>,
    whens: Vec<Option<&'a BooleanChunked>>,
    accounts: Vec<Vec<&'a StringChunked>>,
    amounts: Vec<Vec<AmountColumn<'a>>>,
}

impl<'a> FrameView<'a> {
    fn new(
        frame: &'a DataFrame,
        def: &'a StreamDef,
        templates: &[CompiledTemplate],
    ) -> PolarsResult<Self> {
        let mut texts = HashMap::new();
        for column in frame.columns() {
            if let Ok(strings) = column.str() {
                texts.insert(column.name().as_str(), strings);
            }
        }
        let mut numeric_nulls = Vec::new();
        for column in &def.numeric {
            numeric_nulls.push((column.as_str(), frame.column(column)?.is_null()));
        }
        let mut whens = Vec::new();
        let mut accounts = Vec::new();
        let mut amounts = Vec::new();
        for (t, template) in templates.iter().enumerate() {
            whens.push(match template.when {
                Some(_) => Some(frame.column(&format!("__when_{t}"))?.bool()?),
                None => None,
            });
            let mut template_accounts = Vec::new();
            let mut template_amounts = Vec::new();
            for p in 0..template.postings.len() {
                template_accounts.push(frame.column(&format!("__account_{t}_{p}"))?.str()?);
                let column = frame.column(&format!("__amount_{t}_{p}"))?;
                template_amounts.push(match column.dtype() {
                    DataType::Decimal(_, scale) => {
                        AmountColumn::Decimal(column.decimal()?, *scale as u32)
                    }
                    DataType::Null => AmountColumn::Null,
                    dtype if dtype.is_integer() => {
                        AmountColumn::Integer(column.cast(&DataType::Int64)?.i64()?.clone())
                    }
                    // Refused by the caller before any row is read.
                    _ => AmountColumn::Null,
                });
            }
            accounts.push(template_accounts);
            amounts.push(template_amounts);
        }
        Ok(FrameView {
            texts,
            numeric_nulls,
            whens,
            accounts,
            amounts,
        })
    }

    fn text(&self, column: &str, row: usize) -> Option<&'a str> {
        self.texts.get(column)?.get(row)
    }

    /// The first numeric column whose value is not a number, with its text.
    fn bad_number(&self, row: usize) -> Option<(&'a str, &'a str)> {
        self.numeric_nulls.iter().find_map(|(column, nulls)| {
            if nulls.get(row).unwrap_or(true) {
                self.text(&text_column(column), row)
                    .map(|text| (*column, text))
            } else {
                None
            }
        })
    }

    fn when(&self, t: usize, row: usize) -> bool {
        self.whens[t].and_then(|w| w.get(row)).unwrap_or(false)
    }

    fn account(&self, t: usize, p: usize, row: usize) -> Option<&'a str> {
        self.accounts[t][p].get(row)
    }

    fn amount(&self, t: usize, p: usize, row: usize) -> Result<Option<Amount>, String> {
        let value = match &self.amounts[t][p] {
            AmountColumn::Decimal(decimals, scale) => {
                decimals.physical().get(row).map(|m| (m, *scale))
            }
            AmountColumn::Integer(integers) => integers.get(row).map(|v| (i128::from(v), 0)),
            AmountColumn::Null => None,
        };
        value
            .map(|(mantissa, scale)| {
                Amount::from_scaled(mantissa, scale).map_err(|e| e.to_string())
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests;
