//! The Rhai sandbox rule scripts run in: compiled once at load, limited in operations, depth,
//! sizes and wall-clock time, with no modules, no clock, no `eval`, and `print` routed into the
//! explain trace instead of stdout.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope, AST};
use serde_json::Value;

/// Limits a script runs under; the defaults keep a whole request's chain well under a millisecond
/// while leaving room for real policy logic.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 100_000,
            max_call_levels: 32,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            deadline: Duration::from_millis(50),
        }
    }
}

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static PRINTED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Marker carried by the error `deny("why")` raises, so a denial is told apart from a failure.
#[derive(Debug, Clone)]
struct Denial(String);

/// The names every script sees. `pod` is the document being changed; the rest are read-only.
pub const SCOPE_NAMES: [&str; 5] = ["pod", "request", "image", "params", "project"];

pub fn engine(limits: Limits) -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_variables(1_000);
    engine.set_max_functions(1_000);
    engine.set_strict_variables(true);
    engine.disable_symbol("eval");
    engine.on_print(|text| PRINTED.with(|p| p.borrow_mut().push(text.to_string())));
    engine.on_debug(|text, _, _| PRINTED.with(|p| p.borrow_mut().push(text.to_string())));
    engine.on_progress(|operations| {
        if operations % 128 != 0 {
            return None;
        }
        DEADLINE.with(|deadline| match deadline.get() {
            Some(at) if Instant::now() > at => Some(Dynamic::from("wall-clock deadline exceeded")),
            _ => None,
        })
    });
    engine.register_fn("deny", |why: &str| -> Result<Dynamic, Box<EvalAltResult>> {
        Err(Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(Denial(why.to_string())),
            Position::NONE,
        )))
    });
    engine
}

/// The names every script sees, less `missing` (to learn whether a script reads it).
fn declaration_scope(missing: Option<&str>) -> Scope<'static> {
    let mut scope = Scope::new();
    for name in SCOPE_NAMES
        .into_iter()
        .filter(|name| Some(*name) != missing)
    {
        scope.push(name, ());
    }
    scope
}

/// A compiled script and where it came from, for error messages.
#[derive(Debug, Clone)]
pub struct Script {
    ast: Arc<AST>,
    /// Which read-only inputs the script names; the others are not converted for it.
    reads: Reads,
}

/// The read-only inputs (`request`, `image`, `project`) a script names anywhere. With strict
/// variables and no `eval`, a script that compiles without a name in scope cannot read it.
#[derive(Debug, Clone, Copy)]
struct Reads {
    request: bool,
    image: bool,
    project: bool,
}

/// Compiles `source` with `compile` (a whole script or one expression) and learns what it reads.
fn compile_with(
    source: &str,
    compile: impl Fn(&Scope<'static>, &str) -> Result<AST, rhai::ParseError>,
) -> Result<Script, String> {
    let ast = compile(&declaration_scope(None), source).map_err(|e| e.to_string())?;
    let reads_name = |name| compile(&declaration_scope(Some(name)), source).is_err();
    Ok(Script {
        ast: Arc::new(ast),
        reads: Reads {
            request: reads_name("request"),
            image: reads_name("image"),
            project: reads_name("project"),
        },
    })
}

pub fn compile(engine: &Engine, source: &str) -> Result<Script, String> {
    compile_with(source, |scope, source| {
        engine.compile_with_scope(scope, source)
    })
}

pub fn compile_expression(engine: &Engine, source: &str) -> Result<Script, String> {
    compile_with(source, |scope, source| {
        engine.compile_expression_with_scope(scope, source)
    })
}

/// The read-only inputs of a script, each converted to a Rhai value once per request, and only
/// when a script that reads it runs (the default policy runs none).
pub struct Context<'a> {
    request: &'a Value,
    image: Option<&'a Value>,
    project: Option<&'a str>,
    converted: [std::cell::OnceCell<Dynamic>; 3],
}

impl<'a> Context<'a> {
    pub fn new(request: &'a Value, image: Option<&'a Value>, project: Option<&'a str>) -> Self {
        Context {
            request,
            image,
            project,
            converted: Default::default(),
        }
    }

    fn request(&self) -> Dynamic {
        self.converted[0]
            .get_or_init(|| to_dynamic(self.request))
            .clone()
    }

    fn image(&self) -> Dynamic {
        self.converted[1]
            .get_or_init(|| self.image.map(to_dynamic).unwrap_or(Dynamic::UNIT))
            .clone()
    }

    fn project(&self) -> Dynamic {
        self.converted[2]
            .get_or_init(|| {
                self.project
                    .map(|p| Dynamic::from(p.to_string()))
                    .unwrap_or(Dynamic::UNIT)
            })
            .clone()
    }
}

/// JSON → Rhai, directly: the same values serde's `rhai::serde::to_dynamic` makes (objects become
/// Rhai maps, integers `INT`, other numbers `FLOAT`), at a fraction of the cost — a script rule
/// converts the whole pod in and out on every request.
pub fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(flag) => Dynamic::from_bool(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => Dynamic::from_int(integer),
            None => number
                .as_f64()
                .map(Dynamic::from_float)
                .unwrap_or(Dynamic::UNIT),
        },
        Value::String(text) => Dynamic::from(rhai::ImmutableString::from(text.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(entries) => Dynamic::from_map(
            entries
                .iter()
                .map(|(key, value)| (key.as_str().into(), to_dynamic(value)))
                .collect(),
        ),
    }
}

/// How a script run ended.
pub enum Ran {
    /// The script finished; for a mutation, the new pod.
    Value(Dynamic),
    /// The script called `deny(why)`.
    Denied(String),
}

pub struct Run {
    pub ended: Result<Ran, String>,
    pub printed: Vec<String>,
}

/// Runs a script with `pod` as a mutable variable; returns the script's value, or the `pod`
/// variable when the script ends without one.
pub fn run(
    engine: &Engine,
    script: &Script,
    limits: &Limits,
    context: &Context<'_>,
    params: &Dynamic,
    pod: Dynamic,
) -> Run {
    let mut scope = Scope::new();
    scope.push("pod", pod);
    let reads = script.reads;
    if reads.request {
        scope.push_constant_dynamic("request", context.request());
    }
    if reads.image {
        scope.push_constant_dynamic("image", context.image());
    }
    scope.push_constant_dynamic("params", params.clone());
    if reads.project {
        scope.push_constant_dynamic("project", context.project());
    }
    DEADLINE.with(|d| d.set(Some(Instant::now() + limits.deadline)));
    let result = engine.eval_ast_with_scope::<Dynamic>(&mut scope, &script.ast);
    DEADLINE.with(|d| d.set(None));
    let printed = PRINTED.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let ended = match result {
        Ok(value) if value.is_unit() => Ok(Ran::Value(
            scope.get_value::<Dynamic>("pod").unwrap_or_default(),
        )),
        Ok(value) => Ok(Ran::Value(value)),
        Err(error) => match denial(&error) {
            Some(why) => Ok(Ran::Denied(why)),
            None => Err(describe(&error)),
        },
    };
    Run { ended, printed }
}

fn denial(error: &EvalAltResult) -> Option<String> {
    match error {
        EvalAltResult::ErrorRuntime(value, _) => value.clone().try_cast::<Denial>().map(|d| d.0),
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => denial(inner),
        _ => None,
    }
}

fn describe(error: &EvalAltResult) -> String {
    match error {
        EvalAltResult::ErrorTooManyOperations(position) => {
            format!("stopped after too many operations (possible endless loop) at {position}")
        }
        EvalAltResult::ErrorTerminated(reason, position) => {
            format!("stopped: {reason} at {position}")
        }
        other => other.to_string(),
    }
}

/// Rhai → JSON, directly for the types JSON has; anything else (a character, a function
/// pointer, …) goes through serde, which converts what it can and names what it cannot.
pub fn from_dynamic(value: &Dynamic) -> Result<Value, String> {
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(flag) = value.as_bool() {
        return Ok(Value::Bool(flag));
    }
    if let Ok(integer) = value.as_int() {
        return Ok(Value::from(integer));
    }
    if let Ok(float) = value.as_float() {
        return Ok(serde_json::Number::from_f64(float).map_or(Value::Null, Value::Number));
    }
    if value.is_string() {
        if let Some(text) = value.read_lock::<rhai::ImmutableString>() {
            return Ok(Value::String(text.to_string()));
        }
    }
    if value.is_array() {
        if let Some(items) = value.read_lock::<rhai::Array>() {
            return items
                .iter()
                .map(from_dynamic)
                .collect::<Result<_, _>>()
                .map(Value::Array);
        }
    }
    if value.is_map() {
        if let Some(entries) = value.read_lock::<rhai::Map>() {
            let mut object = serde_json::Map::with_capacity(entries.len());
            for (key, value) in entries.iter() {
                object.insert(key.to_string(), from_dynamic(value)?);
            }
            return Ok(Value::Object(object));
        }
    }
    rhai::serde::from_dynamic::<Value>(value)
        .map_err(|e| format!("script returned a value that is not JSON: {e}"))
}

pub fn params_dynamic(params: Option<&Value>) -> Dynamic {
    params
        .map(to_dynamic)
        .unwrap_or_else(|| Dynamic::from_map(rhai::Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_source(source: &str, limits: Limits) -> Run {
        let engine = engine(limits);
        let script = compile(&engine, source).expect("compiles");
        let request = json!({"Image": "busybox"});
        let context = Context::new(&request, None, Some("team"));
        let pod = to_dynamic(&json!({"spec": {"containers": [{"name": "main"}]}}));
        run(
            &engine,
            &script,
            &limits,
            &context,
            &params_dynamic(None),
            pod,
        )
    }

    #[test]
    fn a_script_changes_the_pod_variable() {
        let run = run_source(
            r#"pod.spec.hostname = request.Image + "-" + project; print("set");"#,
            Limits::default(),
        );
        let Ok(Ran::Value(pod)) = run.ended else {
            panic!("script failed")
        };
        assert_eq!(
            from_dynamic(&pod).unwrap()["spec"]["hostname"],
            "busybox-team"
        );
        assert_eq!(run.printed, vec!["set".to_string()]);
    }

    #[test]
    fn direct_conversions_agree_with_serde() {
        let document = json!({
            "metadata": {"name": "pb-x", "labels": {"b": "2", "a": "1"}},
            "spec": {"containers": [{"name": "main", "args": ["-c", "sleep 1"],
                "resources": {"limits": {"cpu": "1"}}, "securityContext": {"runAsUser": 1000,
                "privileged": false, "capabilities": {"drop": ["ALL"]}}}],
                "terminationGracePeriodSeconds": 10, "priority": -3, "ratio": 0.25,
                "nothing": null, "empty": {}, "none": []}
        });
        let direct = from_dynamic(&to_dynamic(&document)).unwrap();
        let through_serde =
            rhai::serde::from_dynamic::<Value>(&rhai::serde::to_dynamic(&document).unwrap())
                .unwrap();
        assert_eq!(direct, through_serde);
        assert_eq!(direct, document);
        // an integer beyond INT becomes a float, as serde makes it
        let big = json!({"big": u64::MAX});
        assert_eq!(
            from_dynamic(&to_dynamic(&big)).unwrap(),
            rhai::serde::from_dynamic::<Value>(&rhai::serde::to_dynamic(&big).unwrap()).unwrap()
        );
        // what a script makes that JSON lacks still converts, or is named
        assert_eq!(from_dynamic(&Dynamic::from('x')).unwrap(), json!("x"));
    }

    #[test]
    fn only_the_inputs_a_script_names_are_given_to_it() {
        let engine = engine(Limits::default());
        let script = compile(
            &engine,
            "// the request is not read here\npod.x = image.User; pod",
        )
        .unwrap();
        assert!(!script.reads.request && script.reads.image && !script.reads.project);
        let script = compile(&engine, "let r = request; pod.y = `${project}`; pod").unwrap();
        assert!(script.reads.request && !script.reads.image && script.reads.project);
        let expression = compile_expression(&engine, "request.Image == \"x\"").unwrap();
        assert!(expression.reads.request && !expression.reads.image);
    }

    #[test]
    fn endless_loops_stop_at_the_operation_limit() {
        let run = run_source("loop { }", Limits::default());
        let Err(message) = run.ended else {
            panic!("loop must fail")
        };
        assert!(message.contains("too many operations"), "{message}");
    }

    #[test]
    fn the_deadline_stops_slow_scripts() {
        let limits = Limits {
            max_operations: 0,
            deadline: Duration::from_millis(5),
            ..Limits::default()
        };
        let run = run_source("let x = 0; loop { x += 1; }", limits);
        let Err(message) = run.ended else {
            panic!("loop must fail")
        };
        assert!(message.contains("deadline"), "{message}");
    }

    #[test]
    fn deny_is_a_denial_not_an_error() {
        let run = run_source(
            r#"if request.Image == "busybox" { deny("no busybox") } pod"#,
            Limits::default(),
        );
        assert!(matches!(run.ended, Ok(Ran::Denied(ref why)) if why == "no busybox"));
    }

    #[test]
    fn eval_and_imports_and_the_clock_are_unavailable() {
        let engine = engine(Limits::default());
        assert!(compile(&engine, r#"eval("1")"#).is_err());
        assert!(compile(&engine, r#"import "x" as y;"#).is_err());
        assert!(compile(&engine, "timestamp()").is_ok_and(|script| {
            let request = json!({});
            let context = Context::new(&request, None, None);
            run(
                &engine,
                &script,
                &Limits::default(),
                &context,
                &params_dynamic(None),
                Dynamic::UNIT,
            )
            .ended
            .is_err()
        }));
    }

    #[test]
    fn undeclared_variables_fail_at_compile_time() {
        let engine = engine(Limits::default());
        let error = compile(&engine, "pod.x = nothing_here;").unwrap_err();
        assert!(error.contains("nothing_here"), "{error}");
    }
}
