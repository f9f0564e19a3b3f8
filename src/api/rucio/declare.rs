//! Declarations: `POST /replicas/bad`, `POST /replicas/bad/dids`, `POST /replicas/bad/pfns`,
//! `POST|GET /replicas/suspicious`, `POST /replicas/tombstone` (and `POST /replicas/quarantine`,
//! refused), and their history: `GET /replicas/bad/states`,
//! `GET /replicas/bad/summary`. A declaration about a copy at another RSE is forwarded to that
//! site, which keeps its own declarations; the history routes ask every selected site.

use std::collections::{BTreeMap, HashSet};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    created, find_site, forward, forward_json, json_body, ndjson, negotiate, optional_bool,
    optional_list, optional_str, parse_date, rfc1123, rse_id, select_sites, strings, Result,
    RucioError, JSON, NDJSON,
};
use crate::engines::catalogue::healing;
use crate::engines::catalogue::pfn;
use crate::engines::catalogue::view::{self, BadQuery, SiteInfo};
use crate::meta::replicas::{Changed, Declared};
use crate::model::replica::{BadReplica, BadState, Did, ReplicaState};
use crate::state::AppState;

/// One replica a declaration names: by PFN or by `{scope, name, rse}`.
struct Named {
    /// How the answer names it (the PFN, or `scope:name`).
    label: String,
    did: Did,
    site: String,
    /// The entry as the client sent it (forwarded as is).
    original: Value,
}

/// Not-declared replicas per RSE, as Rucio answers declarations.
type NotDeclared = BTreeMap<String, Vec<String>>;

/// Resolves PFNs (unknown ones are reported under `unknown`) or dicts (an unknown RSE is 404).
fn resolve(
    sites: &[SiteInfo],
    items: &[Value],
    not_declared: &mut NotDeclared,
) -> Result<Vec<Named>> {
    let all_strings = items.iter().all(Value::is_string);
    if !all_strings && !items.iter().all(Value::is_object) {
        return Err(RucioError::invalid_type(
            "The replicas must be either all PFNs or all dictionaries",
        ));
    }
    let mut out = Vec::new();
    for item in items {
        if let Some(p) = item.as_str() {
            match pfn::parse(sites, p) {
                Some((site, bucket, key)) => out.push(Named {
                    label: p.to_owned(),
                    did: Did::new(bucket, key),
                    site: site.id.clone(),
                    original: item.clone(),
                }),
                None => not_declared
                    .entry("unknown".into())
                    .or_default()
                    .push(format!("{p} Unknown RSE")),
            }
            continue;
        }
        let did = super::parse_did(item)?;
        let rse = item
            .get("rse")
            .and_then(Value::as_str)
            .or_else(|| {
                let id = item.get("rse_id").and_then(Value::as_str)?;
                sites
                    .iter()
                    .find(|s| rse_id(&s.id) == id)
                    .map(|s| s.id.as_str())
            })
            .ok_or_else(|| RucioError::invalid_object(format!("{item}: 'rse' is missing")))?;
        let site = find_site(sites, rse)?;
        out.push(Named {
            label: did.to_string(),
            did,
            site: site.id.clone(),
            original: item.clone(),
        });
    }
    Ok(out)
}

/// Groups by site, in the order sites are listed.
fn by_site<'a>(sites: &'a [SiteInfo], named: &'a [Named]) -> Vec<(&'a SiteInfo, Vec<&'a Named>)> {
    sites
        .iter()
        .map(|s| {
            (
                s,
                named.iter().filter(|n| n.site == s.id).collect::<Vec<_>>(),
            )
        })
        .filter(|(_, n)| !n.is_empty())
        .collect()
}

/// Merges a peer's not-declared map into ours.
fn merge_answer(not_declared: &mut NotDeclared, answer: &Value) {
    if let Some(map) = answer.as_object() {
        for (rse, entries) in map {
            let list = not_declared.entry(rse.clone()).or_default();
            list.extend(
                entries
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            );
        }
    }
}

/// A declaration a peer could not take: every replica of it is reported not declared.
fn unreachable(not_declared: &mut NotDeclared, site: &SiteInfo, named: &[&Named], e: &RucioError) {
    let list = not_declared.entry(site.id.clone()).or_default();
    list.extend(named.iter().map(|n| format!("{} {}", n.label, e.message)));
}

fn declared_answer(not_declared: NotDeclared) -> Response {
    (StatusCode::CREATED, Json(not_declared)).into_response()
}

// ---- BAD -----------------------------------------------------------------------------------

/// `POST /replicas/bad`: the copy is set to BAD and its repair queued.
pub async fn bad(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    negotiate(&headers, &[JSON])?;
    let p = json_body(&body)?;
    let mut items = optional_list(&p, "replicas")?;
    if items.is_empty() {
        items = optional_list(&p, "pfns")?;
    }
    let reason = optional_str(&p, "reason")?;
    let force = optional_bool(&p, "force")?;
    let sites = view::sites(&state.catalogue).await?;
    let mut not_declared = NotDeclared::new();
    let named = resolve(&sites, items, &mut not_declared)?;
    for (site, group) in by_site(&sites, &named) {
        if site.local {
            for n in group {
                let why = reason.unwrap_or("declared BAD through the API");
                let outcome = healing::declare_bad(
                    &state.catalogue,
                    &n.did.scope,
                    &n.did.name,
                    why,
                    force,
                    "api",
                )
                .await?;
                let note = match outcome {
                    Declared::Declared => continue,
                    Declared::AlreadyDeclared => "Already declared",
                    Declared::UnknownReplica => "Unknown replica",
                };
                not_declared
                    .entry(site.id.clone())
                    .or_default()
                    .push(format!("{} {note}", n.label));
            }
            continue;
        }
        let originals: Vec<Value> = group.iter().map(|n| n.original.clone()).collect();
        let body = json!({ "replicas": originals, "reason": reason, "force": force });
        match forward_json(&state, site, "/replicas/bad", &headers, &body).await {
            Ok(answer) => merge_answer(&mut not_declared, &answer),
            Err(e) => unreachable(&mut not_declared, site, &group, &e),
        }
    }
    Ok(declared_answer(not_declared))
}

/// `POST /replicas/bad/dids` (`declare_bad_did_replicas`): the copies of `dids` at `rse` are
/// declared BAD. Answers 201 with the list of those not declared (`scope:name Unknown replica`,
/// `scope:name Already declared`), as Rucio's `add_bad_dids`; a copy at another RSE is declared
/// by that site.
pub async fn bad_dids(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    negotiate(&headers, &[JSON])?;
    let p = json_body(&body)?;
    let dids = super::parse_dids(optional_list(&p, "dids")?)?;
    let rse = super::required_str(&p, "rse")?;
    let reason = optional_str(&p, "reason")?;
    let sites = view::sites(&state.catalogue).await?;
    let site = find_site(&sites, rse)?;
    if !site.local {
        let forwarded = json!({ "dids": p.get("dids"), "rse": rse, "reason": reason });
        let answer = forward_json(&state, site, "/replicas/bad/dids", &headers, &forwarded).await?;
        return Ok((StatusCode::CREATED, Json(answer)).into_response());
    }
    let why = reason.unwrap_or("declared BAD through the API");
    let mut not_declared = Vec::new();
    for did in &dids {
        let outcome =
            healing::declare_bad(&state.catalogue, &did.scope, &did.name, why, false, "api")
                .await?;
        match outcome {
            Declared::Declared => {}
            Declared::AlreadyDeclared => not_declared.push(format!("{did} Already declared")),
            Declared::UnknownReplica => not_declared.push(format!("{did} Unknown replica")),
        }
    }
    Ok((StatusCode::CREATED, Json(not_declared)).into_response())
}

/// `POST /replicas/quarantine` records dark files (on storage, not in the catalogue) for
/// Rucio's dark reaper. A site's storage holds only the objects it catalogues and nothing
/// deletes unknown files from it, so this is refused in Rucio's envelope, after the request is
/// read as Rucio reads it.
pub async fn quarantine(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    negotiate(&headers, &[JSON])?;
    let p = json_body(&body)?;
    let replicas = optional_list(&p, "replicas")?;
    let (rse, rse_id_given) = (optional_str(&p, "rse")?, optional_str(&p, "rse_id")?);
    if replicas.is_empty() {
        // Rucio answers 200 and does nothing for an empty list.
        return Ok(StatusCode::OK.into_response());
    }
    let sites = view::sites(&state.catalogue).await?;
    match (rse, rse_id_given) {
        (Some(rse), _) => {
            find_site(&sites, rse)?;
        }
        (None, Some(id)) => {
            if !sites.iter().any(|s| rse_id(&s.id) == id) {
                return Err(RucioError::not_found(
                    "RSENotFound",
                    format!("RSE with id '{id}' could not be found"),
                ));
            }
        }
        (None, None) => {
            return Err(RucioError::value_error(
                "Either RSE name or RSE id must be specified",
            ))
        }
    }
    Err(RucioError::unsupported(
        "quarantining replicas is not supported: this storage holds no files outside the catalogue",
    ))
}

// ---- SUSPICIOUS ----------------------------------------------------------------------------

/// `POST /replicas/suspicious`: suspicions accumulate; past the threshold the copy is re-read.
pub async fn suspicious(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    negotiate(&headers, &[JSON])?;
    let p = json_body(&body)?;
    let pfns = optional_list(&p, "pfns")?;
    strings(pfns, "pfns")?;
    let reason = optional_str(&p, "reason")?;
    let sites = view::sites(&state.catalogue).await?;
    let mut not_declared = NotDeclared::new();
    let named = resolve(&sites, pfns, &mut not_declared)?;
    for (site, group) in by_site(&sites, &named) {
        if site.local {
            for n in group {
                if !healing::suspect(&state.catalogue, &n.did.scope, &n.did.name, reason).await? {
                    not_declared
                        .entry(site.id.clone())
                        .or_default()
                        .push(format!("{} Unknown replica", n.label));
                }
            }
            continue;
        }
        let originals: Vec<Value> = group.iter().map(|n| n.original.clone()).collect();
        let body = json!({ "pfns": originals, "reason": reason });
        match forward_json(&state, site, "/replicas/suspicious", &headers, &body).await {
            Ok(answer) => merge_answer(&mut not_declared, &answer),
            Err(e) => unreachable(&mut not_declared, site, &group, &e),
        }
    }
    Ok(declared_answer(not_declared))
}

#[derive(Deserialize, Default)]
pub struct SuspiciousQuery {
    rse_expression: Option<String>,
    younger_than: Option<String>,
    nattempts: Option<String>,
}

/// `GET /replicas/suspicious`: replicas declared suspicious more than `nattempts` times.
pub async fn suspicious_list(
    State(state): State<AppState>,
    Query(q): Query<SuspiciousQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    negotiate(&headers, &[JSON])?;
    let nattempts = int_param(q.nattempts.as_deref(), "nattempts")?.unwrap_or(0);
    let query = BadQuery {
        state: Some(BadState::Suspicious),
        since_ms: date_param(q.younger_than.as_deref())?,
        ..Default::default()
    };
    let rows = declarations(&state, q.rse_expression.as_deref(), &query).await?;
    let mut grouped: BTreeMap<(&str, &str, &str), (i64, i64)> = BTreeMap::new();
    for r in &rows {
        let e = grouped
            .entry((&r.bucket, &r.name, &r.site))
            .or_insert((0, r.created_at));
        e.0 += 1;
        e.1 = e.1.max(r.created_at);
    }
    let out: Vec<Value> = grouped
        .into_iter()
        .filter(|(_, (cnt, _))| *cnt > nattempts)
        .map(|((bucket, name, site), (cnt, latest))| {
            json!({ "scope": bucket, "name": name, "rse": site, "rse_id": rse_id(site),
                    "cnt": cnt, "created_at": rfc1123(latest) })
        })
        .collect();
    Ok(Json(out).into_response())
}

/// The declarations at the sites an RSE expression selects (every site without one).
async fn declarations(
    state: &AppState,
    rse_expression: Option<&str>,
    query: &BadQuery,
) -> Result<Vec<BadReplica>> {
    let sites = view::sites(&state.catalogue).await?;
    let selected = select_sites(&sites, rse_expression)?;
    Ok(view::bad_replicas(&state.catalogue, query, &selected).await?)
}

/// An optional integer query parameter (empty is absent).
fn int_param(value: Option<&str>, name: &str) -> Result<Option<i64>> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| RucioError::value_error(format!("invalid {name} {v:?}"))),
    }
}

/// An optional date query parameter (empty is absent).
fn date_param(value: Option<&str>) -> Result<Option<i64>> {
    value.filter(|v| !v.is_empty()).map(parse_date).transpose()
}

// ---- bad/pfns --------------------------------------------------------------------------------

/// What `bad/pfns` declares.
#[derive(Clone, Copy, PartialEq)]
enum PfnState {
    Bad,
    Suspicious,
    Temporary,
}

fn parse_pfn_state(p: &Map<String, Value>) -> Result<PfnState> {
    let text = optional_str(p, "state")?.unwrap_or("");
    match BadState::parse(text) {
        Some(BadState::Bad) => Ok(PfnState::Bad),
        Some(BadState::Suspicious) => Ok(PfnState::Suspicious),
        Some(BadState::TemporaryUnavailable) => Ok(PfnState::Temporary),
        _ => Err(RucioError::value_error(format!(
            "state {text:?} is not one of BAD, SUSPICIOUS, TEMPORARY_UNAVAILABLE"
        ))),
    }
}

/// `POST /replicas/bad/pfns`: BAD (no expires_at), SUSPICIOUS, or TEMPORARY_UNAVAILABLE until
/// expires_at (required). A malformed request, or one naming a PFN twice (409 `Duplicate`),
/// changes nothing; otherwise each PFN is declared at its site (forwarded when it is another
/// one), and the answer is 201 with the list of those not declared, as the seed says
/// (`<pfn> Unknown RSE`, `<pfn> Unknown replica`, `<pfn> Already declared`, or why not).
pub async fn bad_pfns(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let p = json_body(&body)?;
    let pfns = strings(optional_list(&p, "pfns")?, "pfns")?;
    let kind = parse_pfn_state(&p)?;
    let reason = optional_str(&p, "reason")?;
    let expires_text = optional_str(&p, "expires_at")?;
    let expires_at = match (kind, expires_text) {
        (PfnState::Temporary, None) => {
            return Err(RucioError::input_validation(
                "When adding a TEMPORARY UNAVAILABLE pfn the expires_at value should be set.",
            ))
        }
        (PfnState::Bad, Some(_)) => {
            return Err(RucioError::input_validation(
                "When adding a BAD pfn the expires_at value shouldn't be set.",
            ))
        }
        (_, t) => t.map(parse_date).transpose()?,
    };
    let mut seen = HashSet::new();
    if let Some(dup) = pfns.iter().find(|p| !seen.insert(*p)) {
        return Err(RucioError::duplicate(format!(
            "PFN {dup} is declared twice"
        )));
    }
    let sites = view::sites(&state.catalogue).await?;
    let items: Vec<Value> = pfns.iter().map(|p| json!(p)).collect();
    let mut unknown = NotDeclared::new();
    let named = resolve(&sites, &items, &mut unknown)?;
    let mut not_declared: Vec<String> = unknown.into_values().flatten().collect();
    for (site, group) in by_site(&sites, &named) {
        if site.local {
            for n in group {
                if let Err(why) = declare_pfn_here(&state, n, kind, reason, expires_at).await? {
                    not_declared.push(why);
                }
            }
            continue;
        }
        let subset: Vec<&str> = group.iter().map(|n| n.label.as_str()).collect();
        let mut body = p.clone();
        body.insert("pfns".into(), json!(subset));
        match forward_json(
            &state,
            site,
            "/replicas/bad/pfns",
            &headers,
            &Value::Object(body),
        )
        .await
        {
            Ok(answer) => not_declared.extend(
                answer
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            ),
            Err(e) => not_declared.extend(subset.iter().map(|p| format!("{p} {}", e.message))),
        }
    }
    Ok((StatusCode::CREATED, Json(not_declared)).into_response())
}

/// Declares one PFN of this site; Err is the line of the not-declared list saying why not (a
/// store failure is an error of the request).
async fn declare_pfn_here(
    state: &AppState,
    n: &Named,
    kind: PfnState,
    reason: Option<&str>,
    expires_at: Option<i64>,
) -> Result<std::result::Result<(), String>> {
    let (bucket, name, site) = (&n.did.scope, &n.did.name, &state.site_id);
    let not = |why: &str| Err(format!("{} {why}", n.label));
    let Some(row) = state.meta.replica(bucket, name, site).await? else {
        return Ok(not("Unknown replica"));
    };
    match kind {
        PfnState::Bad => {
            let why = reason.unwrap_or("declared BAD through the API");
            Ok(
                match healing::declare_bad(&state.catalogue, bucket, name, why, false, "api")
                    .await?
                {
                    Declared::Declared => Ok(()),
                    Declared::AlreadyDeclared => not("Already declared"),
                    Declared::UnknownReplica => not("Unknown replica"),
                },
            )
        }
        PfnState::Suspicious => Ok(
            match healing::suspect(&state.catalogue, bucket, name, reason).await? {
                true => Ok(()),
                false => not("Unknown replica"),
            },
        ),
        PfnState::Temporary if row.state == ReplicaState::TemporaryUnavailable => {
            Ok(not("Already declared"))
        }
        PfnState::Temporary => {
            let until = expires_at.unwrap_or_default();
            Ok(
                match state
                    .meta
                    .declare_temporary(bucket, name, site, reason, until)
                    .await?
                {
                    Changed::Done => Ok(()),
                    Changed::NotFound => not("Unknown replica"),
                    Changed::Locked | Changed::Refused(_) => not(&format!(
                        "cannot become TEMPORARY_UNAVAILABLE from {}: only an AVAILABLE replica can",
                        row.state.name()
                    )),
                },
            )
        }
    }
}

// ---- tombstone -----------------------------------------------------------------------------

/// `POST /replicas/tombstone`: OBSOLETE tombstones (the reaper deletes the copy soon); a locked
/// copy answers 423.
pub async fn tombstone(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let p = json_body(&body)?;
    let items = optional_list(&p, "replicas")?;
    let sites = view::sites(&state.catalogue).await?;
    for item in items {
        let key = |k: &str| {
            item.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| RucioError::key_error(k))
        };
        let (rse, did) = (key("rse")?, Did::new(key("scope")?, key("name")?));
        let site = find_site(&sites, rse)?;
        if !site.local {
            let body = json!({ "replicas": [item] });
            forward(
                &state,
                site,
                Method::POST,
                "/replicas/tombstone",
                &headers,
                &body,
            )
            .await?;
            continue;
        }
        match state
            .meta
            .set_tombstone(&did.scope, &did.name, &site.id, 0)
            .await?
        {
            Changed::Done => {}
            Changed::Locked => return Err(RucioError::locked(&did, rse)),
            _ => return Err(RucioError::replica_not_found(&did, rse)),
        }
    }
    Ok(created())
}

// ---- history -------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct StatesQuery {
    state: Option<String>,
    rse: Option<String>,
    younger_than: Option<String>,
    older_than: Option<String>,
    limit: Option<String>,
    list_pfns: Option<String>,
}

/// `GET /replicas/bad/states`: declarations, newest first.
pub async fn bad_states(
    State(state): State<AppState>,
    Query(q): Query<StatesQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    negotiate(&headers, &[NDJSON])?;
    let bad_state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(BadState::parse(s).ok_or_else(|| {
            RucioError::value_error(format!("'{s}' is not a valid BadFilesStatus"))
        })?),
    };
    let query = BadQuery {
        state: bad_state,
        since_ms: date_param(q.younger_than.as_deref())?,
        until_ms: date_param(q.older_than.as_deref())?,
        limit: int_param(q.limit.as_deref(), "limit")?,
    };
    let sites = view::sites(&state.catalogue).await?;
    let rse = match q.rse.as_deref().filter(|s| !s.is_empty()) {
        Some(rse) => Some(find_site(&sites, rse)?.clone()),
        None => None,
    };
    let selected = rse.clone().map_or_else(|| sites.clone(), |s| vec![s]);
    let rows = view::bad_replicas(&state.catalogue, &query, &selected).await?;
    let list_pfns = matches!(q.list_pfns.as_deref(), Some("true" | "True" | "1"));
    if list_pfns {
        let pfns = declared_pfns(&state, &rows, &sites, rse.as_ref()).await?;
        return Ok(ndjson(pfns.into_iter().map(Value::String)));
    }
    Ok(ndjson(rows.iter().map(state_line)))
}

/// What Rucio lists for `list_pfns`: PFN strings, not declarations. With `rse`, the PFN of each
/// declared copy there; without, the PFNs of every copy (any state) of each declared file.
/// Each PFN once, in the order of the declarations.
async fn declared_pfns(
    state: &AppState,
    rows: &[BadReplica],
    sites: &[SiteInfo],
    rse: Option<&SiteInfo>,
) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut dids = Vec::new();
    for r in rows {
        if seen.insert((r.bucket.as_str(), r.name.as_str())) {
            dids.push(Did::new(&r.bucket, &r.name));
        }
    }
    let copies = match rse {
        Some(_) => Vec::new(),
        None => view::replicas(&state.catalogue, &dids, sites).await?,
    };
    let mut pfns = Vec::new();
    for did in &dids {
        let at: Vec<&SiteInfo> = match rse {
            Some(site) => vec![site],
            None => sites
                .iter()
                .filter(|s| {
                    copies
                        .iter()
                        .any(|c| c.site == s.id && c.bucket == did.scope && c.name == did.name)
                })
                .collect(),
        };
        for site in at {
            let pfn = pfn::build(&site.url, &did.scope, &did.name);
            if !pfns.contains(&pfn) {
                pfns.push(pfn);
            }
        }
    }
    Ok(pfns)
}

fn state_line(r: &BadReplica) -> Value {
    json!({
        "scope": r.bucket, "name": r.name, "rse": r.site, "rse_id": rse_id(&r.site),
        "state": r.state.name(), "reason": r.reason,
        "created_at": rfc1123(r.created_at), "updated_at": rfc1123(r.updated_at),
    })
}

#[derive(Deserialize, Default)]
pub struct SummaryQuery {
    rse_expression: Option<String>,
    from_date: Option<String>,
    to_date: Option<String>,
}

/// `GET /replicas/bad/summary`: declarations counted per RSE, day and reason, by state.
pub async fn bad_summary(
    State(state): State<AppState>,
    Query(q): Query<SummaryQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    negotiate(&headers, &[NDJSON])?;
    let query = BadQuery {
        since_ms: date_param(q.from_date.as_deref())?,
        until_ms: date_param(q.to_date.as_deref())?,
        ..Default::default()
    };
    let rows = declarations(&state, q.rse_expression.as_deref(), &query).await?;
    const DAY: i64 = 86_400_000;
    let mut incidents: BTreeMap<(String, i64, String), Map<String, Value>> = BTreeMap::new();
    for r in &rows {
        let day = r.created_at - r.created_at.rem_euclid(DAY);
        let key = (r.site.clone(), day, r.reason.clone().unwrap_or_default());
        let counts = incidents.entry(key).or_default();
        let n = counts
            .get(r.state.name())
            .and_then(Value::as_i64)
            .unwrap_or(0);
        counts.insert(r.state.name().into(), json!(n + 1));
    }
    Ok(ndjson(incidents.into_iter().map(
        |((site, day, reason), counts)| {
            let mut line = json!({ "rse": site, "rse_id": rse_id(&site),
            "created_at": rfc1123(day), "reason": reason });
            if let Some(obj) = line.as_object_mut() {
                obj.extend(counts);
            }
            line
        },
    )))
}
