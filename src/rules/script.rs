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

fn declaration_scope() -> Scope<'static> {
    let mut scope = Scope::new();
    for name in SCOPE_NAMES {
        scope.push(name, ());
    }
    scope
}

/// A compiled script and where it came from, for error messages.
#[derive(Debug, Clone)]
pub struct Script {
    ast: Arc<AST>,
}

pub fn compile(engine: &Engine, source: &str) -> Result<Script, String> {
    let scope = declaration_scope();
    engine
        .compile_with_scope(&scope, source)
        .map(|ast| Script { ast: Arc::new(ast) })
        .map_err(|e| e.to_string())
}

pub fn compile_expression(engine: &Engine, source: &str) -> Result<Script, String> {
    let scope = declaration_scope();
    engine
        .compile_expression_with_scope(&scope, source)
        .map(|ast| Script { ast: Arc::new(ast) })
        .map_err(|e| e.to_string())
}

/// The read-only inputs of a script, converted to Rhai values once per request.
pub struct Context {
    pub request: Dynamic,
    pub image: Dynamic,
    pub project: Dynamic,
}

impl Context {
    pub fn new(request: &Value, image: Option<&Value>, project: Option<&str>) -> Self {
        Context {
            request: to_dynamic(request),
            image: image.map(to_dynamic).unwrap_or(Dynamic::UNIT),
            project: project
                .map(|p| Dynamic::from(p.to_string()))
                .unwrap_or(Dynamic::UNIT),
        }
    }
}

fn to_dynamic(value: &Value) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
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
    context: &Context,
    params: &Dynamic,
    pod: Dynamic,
) -> Run {
    let mut scope = Scope::new();
    scope.push("pod", pod);
    scope.push_constant_dynamic("request", context.request.clone());
    scope.push_constant_dynamic("image", context.image.clone());
    scope.push_constant_dynamic("params", params.clone());
    scope.push_constant_dynamic("project", context.project.clone());
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

pub fn from_dynamic(value: &Dynamic) -> Result<Value, String> {
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
        let context = Context::new(&json!({"Image": "busybox"}), None, Some("team"));
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
            let context = Context::new(&json!({}), None, None);
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
