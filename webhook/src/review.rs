//! AdmissionReview in, AdmissionReview out: the pure request/response part of the webhook.
//!
//! The HTTP layer ([`crate::router`]) hands the raw body to [`mutate`] or [`validate`], which
//! never panic and always answer with an `admission.k8s.io` AdmissionReview:
//!
//! - a body that is not an AdmissionReview (malformed JSON, no `request`) is an
//!   [`Outcome::BadRequest`]: HTTP 400 with an AdmissionReview whose response is denied and names
//!   the problem, so a human reading the apiserver log sees why;
//! - on CREATE of a Workspace whose `inference.preset.name` is a Hugging Face id, the caller
//!   resolves it beforehand ([`crate::hub`], a [`HubLookup`]): `/mutate` records the facts
//!   (`kaito.sh/model-revision`, `kaito.sh/model-facts`) before defaulting, `/validate` denies
//!   recorded facts that are not the hub's; a hub that did not answer in time is a denial with
//!   code 503 (ServiceUnavailable) that says to try again;
//! - a request for a kind other than `kaito.sh` `Workspace` is allowed unchanged with a warning
//!   (a misconfigured webhook registration must not block unrelated objects);
//! - DELETE and CONNECT, and subresources (`workspaces/status`), are allowed unchanged;
//! - a Workspace that does not deserialize is denied (422 Invalid) with the JSON path serde
//!   complains about;
//! - `/mutate` answers with a JSONPatch from the defaults of [`kaito_api::admission`];
//! - `/validate` answers allowed (with the verdict's warnings) or denied with every error, one
//!   per line, in `status.message`, `status.code` 422 and `status.reason` `Invalid`;
//! - on CREATE, the ConfigMap named by `tuning.config` or `inference.config` (read beforehand by
//!   the caller, see [`crate::tuning_config`], and handed in as a [`ConfigLookup`]) must exist
//!   and hold a valid `training_config.yaml` or `inference_config.yaml`; the runtime parameters
//!   `kaito-runtime` does not apply come back as warnings.

use std::time::Instant;

use kaito_api::Workspace;
use kaito_api::admission::{
    ANNOTATION_MODEL_FACTS, AdmissionConfig, FieldError, INFERENCE_CONFIG_KEY, TRAINING_CONFIG_KEY,
    Verdict, apply_defaults, parse_inference_config_map, record_hub_model,
    validate as validate_workspace, validate_training_config_map,
};
use kaito_presets::ModelFacts;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::hub::HubLookup;
use crate::tuning_config::ConfigLookup;

/// The API group this webhook handles.
pub const GROUP: &str = "kaito.sh";
/// The kind this webhook handles.
pub const KIND: &str = "Workspace";

/// Which endpoint was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /mutate`: defaulting.
    Mutate,
    /// `POST /validate`: validation.
    Validate,
}

impl Endpoint {
    /// `mutate` or `validate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

/// What the webhook decided, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerdictKind {
    /// Allowed without changes.
    Allowed,
    /// Allowed with a JSONPatch (defaults filled).
    Patched,
    /// Denied: the object is invalid.
    Denied,
    /// The body was not an AdmissionReview (HTTP 400).
    BadRequest,
    /// Not handled: the webhook was at its concurrency limit or the request timed out (503).
    Unavailable,
}

impl VerdictKind {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Patched => "patched",
            Self::Denied => "denied",
            Self::BadRequest => "bad_request",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The answer to one admission call.
#[derive(Debug)]
pub struct Outcome {
    /// HTTP status to answer with: 200, or 400 for a body that is not an AdmissionReview.
    pub http_status: u16,
    /// The AdmissionReview to send back (serialized JSON).
    pub body: Vec<u8>,
    /// For metrics: the operation (`CREATE`, `UPDATE`, `DELETE`, `CONNECT`, or `unknown`).
    pub operation: &'static str,
    /// For metrics: `Workspace`, `other`, or `unknown` when the body did not decode.
    pub kind: &'static str,
    /// For metrics and logs.
    pub verdict: VerdictKind,
}

/// Handles one admission call for `endpoint` with the raw request body, as a webhook without
/// a Kubernetes client does (a `tuning.config` ConfigMap is not checked; a warning says so).
pub fn handle(endpoint: Endpoint, body: &[u8], cfg: &AdmissionConfig) -> Outcome {
    handle_with(endpoint, body, cfg, &ConfigLookup::no_client())
}

/// Handles one admission call for `endpoint` with the raw request body; `config` is what the
/// caller found for the request's `tuning.config` ([`crate::tuning_config::lookup`]).
pub fn handle_with(
    endpoint: Endpoint,
    body: &[u8],
    cfg: &AdmissionConfig,
    config: &ConfigLookup,
) -> Outcome {
    handle_full(endpoint, body, cfg, config, &HubLookup::NotNeeded)
}

/// Handles one admission call for `endpoint` with the raw request body; `config` is what the
/// caller found for the request's ConfigMap, `hub` what it found for its Hugging Face id
/// ([`crate::hub::lookup`]).
pub fn handle_full(
    endpoint: Endpoint,
    body: &[u8],
    cfg: &AdmissionConfig,
    config: &ConfigLookup,
    hub: &HubLookup,
) -> Outcome {
    match Call::parse(body) {
        Ok(call) => handle_call(endpoint, &call, cfg, config, hub),
        Err(outcome) => outcome,
    }
}

/// One admission call, parsed once: the request, and the Workspace it carries decoded once
/// (the ConfigMap and Hugging Face lookups and the admission rules all read this one).
pub struct Call {
    request: AdmissionRequest<DynamicObject>,
    /// The object as JSON and as a Workspace, or why it does not decode; `None` when the
    /// request is not a create or update of a Workspace (no subresource) or has no object.
    object: Option<Result<(Value, Workspace), String>>,
}

impl Call {
    /// Parses an AdmissionReview body (after the JSON value count check).
    pub fn parse(body: &[u8]) -> Result<Call, Outcome> {
        check_json_values(body)?;
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(body).map_err(|err| {
                bad_request(format!(
                    "the request body is not an admission.k8s.io AdmissionReview: {err}"
                ))
            })?;
        let request: AdmissionRequest<DynamicObject> = review
            .try_into()
            .map_err(|_| bad_request("the AdmissionReview has no request".to_owned()))?;
        let admitted = is_workspace(&request)
            && matches!(request.operation, Operation::Create | Operation::Update)
            && !has_subresource(&request);
        let object = request
            .object
            .as_ref()
            .filter(|_| admitted)
            .map(decode_workspace);
        Ok(Call { request, object })
    }

    /// The Workspace a CREATE carries (when it decodes) and its namespace (the request's,
    /// else the object's, else `default`).
    pub fn created(&self) -> Option<(&str, &Workspace)> {
        if !matches!(self.request.operation, Operation::Create) {
            return None;
        }
        let (_, ws) = self.object.as_ref()?.as_ref().ok()?;
        let namespace = self
            .request
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(ws.metadata.namespace.as_deref())
            .unwrap_or("default");
        Some((namespace, ws))
    }
}

impl Call {
    /// The Workspace of a create or update as JSON and typed, or why there is none.
    fn workspace(&self) -> Result<(&Value, &Workspace), String> {
        match &self.object {
            Some(Ok((raw, ws))) => Ok((raw, ws)),
            Some(Err(message)) => Err(message.clone()),
            None => Err("the admission request has no object".to_owned()),
        }
    }
}

fn is_workspace(request: &AdmissionRequest<DynamicObject>) -> bool {
    request.kind.group == GROUP && request.kind.kind == KIND
}

fn has_subresource(request: &AdmissionRequest<DynamicObject>) -> bool {
    request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
}

/// Answers one parsed admission call for `endpoint`.
pub fn handle_call(
    endpoint: Endpoint,
    call: &Call,
    cfg: &AdmissionConfig,
    config: &ConfigLookup,
    hub: &HubLookup,
) -> Outcome {
    let started = Instant::now();
    let request = &call.request;
    let operation = operation_name(&request.operation);
    let workspace = is_workspace(request);
    let kind = if workspace { KIND } else { "other" };
    let response = AdmissionResponse::from(request);

    let (response, verdict) = if !workspace {
        let warning = format!(
            "kaito-webhook handles only {GROUP} {KIND}; {}/{} {} was allowed unchanged \
             (check the webhook configuration's rules)",
            request.kind.group, request.kind.version, request.kind.kind
        );
        tracing::warn!(
            group = %request.kind.group,
            kind = %request.kind.kind,
            namespace = request.namespace.as_deref().unwrap_or(""),
            name = %request.name,
            "admission request for an unhandled kind: allowed"
        );
        (with_warnings(response, vec![warning]), VerdictKind::Allowed)
    } else if matches!(request.operation, Operation::Delete | Operation::Connect)
        || has_subresource(request)
    {
        (response, VerdictKind::Allowed)
    } else {
        match endpoint {
            Endpoint::Mutate => mutate_request(call, response, cfg, hub),
            Endpoint::Validate => validate_request(call, response, cfg, config, hub),
        }
    };

    let ns = request.namespace.as_deref().unwrap_or("");
    let elapsed_us = started.elapsed().as_micros() as u64;
    match verdict {
        VerdictKind::Denied => tracing::info!(
            namespace = ns,
            workspace = %request.name,
            operation,
            endpoint = endpoint.as_str(),
            dry_run = request.dry_run,
            message = %response.result.message,
            elapsed_us,
            "admission denied"
        ),
        _ => tracing::debug!(
            namespace = ns,
            workspace = %request.name,
            operation,
            endpoint = endpoint.as_str(),
            verdict = verdict.as_str(),
            elapsed_us,
            "admission"
        ),
    }

    let body = match serde_json::to_vec(&response.into_review()) {
        Ok(body) => body,
        Err(err) => {
            // Serializing our own response cannot fail for valid UTF-8 strings; answer
            // something the apiserver can read anyway.
            return Outcome {
                http_status: 500,
                body: fallback_body(500, &format!("cannot serialize the response: {err}")),
                operation,
                kind,
                verdict: VerdictKind::BadRequest,
            };
        }
    };
    Outcome {
        http_status: 200,
        body,
        operation,
        kind,
        verdict,
    }
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// A 400 answer: the body is not a usable AdmissionReview.
pub fn bad_request(message: String) -> Outcome {
    failure(400, VerdictKind::BadRequest, message)
}

/// A 503 answer: the request was not handled (busy, or it took too long); the API server
/// retries or applies the webhook's failurePolicy.
pub fn unavailable(message: String) -> Outcome {
    failure(503, VerdictKind::Unavailable, message)
}

fn failure(code: u16, verdict: VerdictKind, message: String) -> Outcome {
    let mut response = AdmissionResponse::invalid(&message);
    response.result.code = code;
    let body = serde_json::to_vec(&response.into_review())
        .unwrap_or_else(|_| fallback_body(code, &message));
    Outcome {
        http_status: code,
        body,
        operation: "unknown",
        kind: "unknown",
        verdict,
    }
}

/// Most JSON values (numbers, strings, arrays, objects, ...) an AdmissionReview may hold. A
/// Workspace review, object and old object with their managedFields, holds a few hundred; the
/// limit keeps what one request can allocate as a JSON tree to a few MiB (each value costs
/// 32 to 100 bytes once parsed, against 2 bytes of `[0,0,...]` on the wire).
pub const MAX_JSON_VALUES: usize = 20_000;

/// Counts the JSON values of `body` without building them, and refuses a body with more than
/// [`MAX_JSON_VALUES`] before anything parses it into a tree. A body that is not JSON passes:
/// the parser reports it with its position.
pub fn check_json_values(body: &[u8]) -> Result<(), Outcome> {
    let left = std::cell::Cell::new(MAX_JSON_VALUES);
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde::de::DeserializeSeed::deserialize(ValueCounter { left: &left }, &mut de) {
        Err(_) if left.get() == 0 => Err(bad_request(format!(
            "the AdmissionReview holds more than {MAX_JSON_VALUES} JSON values (numbers, \
             strings, lists, objects), the webhook's limit; a Workspace is far smaller: send the \
             Workspace without the extra data"
        ))),
        _ => Ok(()),
    }
}

/// Walks a JSON document, counting down `left` per value; an error once it reaches 0.
struct ValueCounter<'a> {
    left: &'a std::cell::Cell<usize>,
}

impl ValueCounter<'_> {
    fn tick<E: serde::de::Error>(&self) -> Result<(), E> {
        match self.left.get() {
            0 => Err(E::custom("too many JSON values")),
            n => {
                self.left.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for ValueCounter<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ValueCounter<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.tick()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tick()?;
        while seq
            .next_element_seed(ValueCounter { left: self.left })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tick()?;
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value_seed(ValueCounter { left: self.left })?;
        }
        Ok(())
    }
}

/// A hand-built AdmissionReview, for the one case where serde_json could not write ours.
fn fallback_body(code: u16, message: &str) -> Vec<u8> {
    let value = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "", "allowed": false,
                     "status": {"status": "Failure", "code": code, "message": message}},
    });
    value.to_string().into_bytes()
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response
            .warnings
            .get_or_insert_with(Vec::new)
            .extend(warnings);
    }
    response
}

/// Denies with 422 Invalid, the way the apiserver reports invalid objects.
fn deny_invalid(response: AdmissionResponse, message: String) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = 422;
    response.result.reason = "Invalid".to_owned();
    response.result.status = Some(kube::core::response::StatusSummary::Failure);
    response
}

/// Denies for a Hugging Face id that was not resolved: 503 ServiceUnavailable when the same
/// request may succeed later (the hub did not answer), else 422 Invalid.
fn deny_hub(response: AdmissionResponse, message: &str, retryable: bool) -> AdmissionResponse {
    let message = format!("inference.preset.name: {message}");
    if !retryable {
        return deny_invalid(response, message);
    }
    let mut response = response.deny(message);
    response.result.code = 503;
    response.result.reason = "ServiceUnavailable".to_owned();
    response.result.status = Some(kube::core::response::StatusSummary::Failure);
    response
}

/// The object of a request as JSON, and as a Workspace (or the deserialization error, with
/// the path serde complained about).
fn decode_workspace(object: &DynamicObject) -> Result<(Value, Workspace), String> {
    let raw = serde_json::to_value(object).map_err(|e| format!("the object is not JSON: {e}"))?;
    let ws = workspace_from_value(&raw)?;
    Ok((raw, ws))
}

/// Deserializes a Workspace from JSON; the error names the field path (`inference.adapters[0].strength: ...`).
pub fn workspace_from_value(raw: &Value) -> Result<Workspace, String> {
    serde_path_to_error::deserialize::<_, Workspace>(raw).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path.is_empty() || path == "." {
            format!("the object is not a valid Workspace: {inner}")
        } else {
            format!("{path}: {inner}")
        }
    })
}

fn mutate_request(
    call: &Call,
    response: AdmissionResponse,
    cfg: &AdmissionConfig,
    hub: &HubLookup,
) -> (AdmissionResponse, VerdictKind) {
    let (raw, ws) = match call.workspace() {
        Ok(decoded) => decoded,
        Err(message) => return (deny_invalid(response, message), VerdictKind::Denied),
    };
    let facts = match hub {
        HubLookup::NotNeeded => None,
        HubLookup::Resolved(facts) => Some(facts),
        HubLookup::Failed { message, retryable } => {
            return (deny_hub(response, message, *retryable), VerdictKind::Denied);
        }
    };
    match default_patch_with(raw, ws, cfg, facts) {
        Ok(None) => (response, VerdictKind::Allowed),
        Ok(Some(patch)) => match response.clone().with_patch(patch) {
            Ok(patched) => (patched, VerdictKind::Patched),
            Err(err) => (
                deny_invalid(
                    response,
                    format!("cannot encode the defaults as a JSON patch: {err}"),
                ),
                VerdictKind::Denied,
            ),
        },
        Err(message) => (deny_invalid(response, message), VerdictKind::Denied),
    }
}

/// The JSONPatch that turns `raw` (the object as the apiserver sent it; `ws` is its decoded
/// form) into its defaulted form, or `None` when the defaults change nothing.
///
/// The patch is computed against the raw object, not against a re-serialized Workspace, so
/// fields this version of the types does not know are never removed: the defaulted Workspace
/// is merged onto the raw object (keys the defaults removed are removed, others overwritten).
pub fn default_patch(
    raw: &Value,
    ws: &Workspace,
    cfg: &AdmissionConfig,
) -> Result<Option<json_patch::Patch>, String> {
    default_patch_with(raw, ws, cfg, None)
}

/// [`default_patch`], recording first the `facts` resolved for the workspace's Hugging Face id.
pub fn default_patch_with(
    raw: &Value,
    ws: &Workspace,
    cfg: &AdmissionConfig,
    facts: Option<&ModelFacts>,
) -> Result<Option<json_patch::Patch>, String> {
    let mut defaulted = ws.clone();
    if let Some(facts) = facts {
        record_hub_model(&mut defaulted, facts);
    }
    apply_defaults(&mut defaulted, cfg);
    if &defaulted == ws {
        return Ok(None);
    }
    let before =
        serde_json::to_value(ws).map_err(|e| format!("cannot serialize the workspace: {e}"))?;
    let after = serde_json::to_value(&defaulted)
        .map_err(|e| format!("cannot serialize the defaulted workspace: {e}"))?;
    let mut target = raw.clone();
    merge_changes(&mut target, &before, &after);
    let patch = json_patch::diff(raw, &target);
    if patch.0.is_empty() {
        Ok(None)
    } else {
        Ok(Some(patch))
    }
}

/// Applies the change `before -> after` onto `target` (which holds `before` plus fields the
/// typed model does not know).
fn merge_changes(target: &mut Value, before: &Value, after: &Value) {
    match (target, before, after) {
        (Value::Object(t), Value::Object(b), Value::Object(a)) => {
            for key in b.keys() {
                if !a.contains_key(key) {
                    t.remove(key);
                }
            }
            for (key, a_val) in a {
                match (t.get_mut(key), b.get(key)) {
                    (Some(t_val), Some(b_val)) => {
                        if b_val != a_val {
                            merge_changes(t_val, b_val, a_val);
                        }
                    }
                    (Some(t_val), None) => *t_val = a_val.clone(),
                    (None, _) => {
                        t.insert(key.clone(), a_val.clone());
                    }
                }
            }
        }
        (t, _, a) => *t = a.clone(),
    }
}

fn validate_request(
    call: &Call,
    response: AdmissionResponse,
    cfg: &AdmissionConfig,
    config: &ConfigLookup,
    hub: &HubLookup,
) -> (AdmissionResponse, VerdictKind) {
    let request = &call.request;
    let new = match call.workspace() {
        Ok((_, ws)) => ws,
        Err(message) => return (deny_invalid(response, message), VerdictKind::Denied),
    };
    let mut warnings = Vec::new();
    let old = match (&request.operation, request.old_object.as_ref()) {
        (Operation::Update, Some(old)) => match decode_workspace(old) {
            Ok((_, ws)) => Some(ws),
            Err(message) => {
                // The stored object predates these types; immutability cannot be checked.
                warnings.push(format!(
                    "the stored workspace does not decode ({message}); update rules were not checked"
                ));
                None
            }
        },
        _ => None,
    };
    let mut verdict = validate_workspace(old.as_ref(), new, cfg);
    if matches!(request.operation, Operation::Create) {
        let namespace = request
            .namespace
            .as_deref()
            .or(new.metadata.namespace.as_deref())
            .unwrap_or("default");
        check_config_map(new, namespace, config, &mut verdict);
        match hub {
            HubLookup::NotNeeded => {}
            HubLookup::Failed { message, retryable } => {
                return (deny_hub(response, message, *retryable), VerdictKind::Denied);
            }
            HubLookup::Resolved(facts) => {
                let recorded = new
                    .annotation(ANNOTATION_MODEL_FACTS)
                    .and_then(|t| ModelFacts::from_json(t).ok());
                if recorded.as_ref() != Some(facts) {
                    verdict.errors.push(FieldError {
                        field: format!("metadata.annotations[{ANNOTATION_MODEL_FACTS}]"),
                        message: format!(
                            "is not what the Hugging Face hub says of {}@{}; remove it and \
                             let the webhook record it",
                            facts.repo, facts.revision
                        ),
                    });
                }
            }
        }
    }
    warnings.extend(verdict.warnings.iter().cloned());
    if verdict.is_allowed() {
        (with_warnings(response, warnings), VerdictKind::Allowed)
    } else {
        (
            with_warnings(deny_invalid(response, verdict.message()), warnings),
            VerdictKind::Denied,
        )
    }
}

/// The ConfigMap a workspace being created names in `tuning.config` or `inference.config`,
/// as `config` found it.
fn check_config_map(ws: &Workspace, namespace: &str, config: &ConfigLookup, v: &mut Verdict) {
    let tuning = ws.tuning.as_ref().and_then(|t| t.config.as_deref());
    let inference = ws.inference.as_ref().and_then(|i| i.config.as_deref());
    let (field, name, key, instead) = match (tuning, inference) {
        (Some(name), _) => (
            "tuning.config",
            name,
            TRAINING_CONFIG_KEY,
            "the built-in training configuration",
        ),
        (None, Some(name)) => (
            "inference.config",
            name,
            INFERENCE_CONFIG_KEY,
            "the runtime's defaults",
        ),
        (None, None) => return,
    };
    let error = |message: String| FieldError {
        field: field.to_owned(),
        message,
    };
    if name.is_empty() {
        v.errors.push(error(format!(
            "is empty: name a ConfigMap holding {key}, or remove {field} to use {instead}"
        )));
        return;
    }
    match config {
        ConfigLookup::Found(data) if tuning.is_some() => {
            let method = ws.tuning.as_ref().and_then(|t| t.method.as_deref());
            v.errors.extend(validate_training_config_map(
                method.unwrap_or(""),
                name,
                data.as_ref(),
            ));
        }
        ConfigLookup::Found(data) => match parse_inference_config_map(name, data.as_ref()) {
            Ok(parsed) => v.warnings.extend(parsed.warnings),
            Err(errors) => v.errors.extend(errors),
        },
        ConfigLookup::NotFound => v.errors.push(error(format!(
            "ConfigMap {name:?} not found in namespace {namespace:?}: create it (key {key}) \
             before the workspace, or remove {field} to use {instead}"
        ))),
        ConfigLookup::Failed(reason) => v.errors.push(error(format!(
            "ConfigMap {name:?} in namespace {namespace:?} could not be read ({reason}); \
             try again"
        ))),
        ConfigLookup::Unchecked(reason) => v.warnings.push(format!(
            "{field}: ConfigMap {name:?} was not checked ({reason}); the workload fails if \
             it is missing or its {key} is invalid"
        )),
        ConfigLookup::NotNeeded => v
            .warnings
            .push(format!("{field}: ConfigMap {name:?} was not checked")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_keeps_unknown_fields_and_applies_changes() {
        let raw = json!({"a": 1, "unknown": {"x": 1}, "r": {"c": null, "keep": true}, "gone": 1});
        let before = json!({"a": 1, "r": {}, "gone": 1});
        let after = json!({"a": 1, "r": {"c": 1}, "n": {"m": 2}});
        let mut target = raw.clone();
        merge_changes(&mut target, &before, &after);
        assert_eq!(
            target,
            json!({"a": 1, "unknown": {"x": 1}, "r": {"c": 1, "keep": true}, "n": {"m": 2}})
        );
    }

    #[test]
    fn workspace_errors_name_the_path() {
        let raw = json!({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                         "metadata": {"name": "x"}, "resource": {"count": "two"}});
        let err = workspace_from_value(&raw).err().unwrap_or_default();
        assert!(err.starts_with("resource.count: "), "{err}");
    }
}
