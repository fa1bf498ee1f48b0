//! From a [`WorkflowFile`] to a checked [`Workflow`]: names unique, the DAG
//! acyclic and sorted, every reference resolvable, every job field valid.
//! Every refusal names the task (if any) and the field.

use std::collections::{BTreeMap, BTreeSet};

use augur_core::{quantity, JobSpecInput};
use serde::{Deserialize, Serialize};

use crate::file::{ForEachFile, TaskFile, Trigger, WorkflowFile};
use crate::outputs::json_item;
use crate::template::{self, Condition, Reference};

/// Most instances of fanned-out tasks one run may have (a task that is not
/// fanned out is one instance and does not count), so a 1 → 10,000 → 1 run
/// fits.
pub const MAX_INSTANCES: usize = 10_000;
/// Largest total size of one task's `for_each` items (they are stored with
/// the task's record).
pub const MAX_ITEMS_BYTES: usize = 512 * 1024;
/// Longest task name.
pub const MAX_TASK_NAME: usize = 63;

/// A refusal: which task (none for top-level fields), which field, why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub task: Option<String>,
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.task {
            Some(t) => write!(f, "task {t:?}: {}: {}", self.field, self.reason),
            None => write!(f, "{}: {}", self.field, self.reason),
        }
    }
}

fn err(task: Option<&str>, field: impl Into<String>, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        task: task.map(str::to_string),
        field: field.into(),
        reason: reason.into(),
    }
}

/// What a task fans out over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForEach {
    List(Vec<String>),
    /// A parameter holding a JSON list.
    Param(String),
    /// An upstream task's output (by task index).
    Output {
        task: usize,
        key: String,
    },
}

/// A checked task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub name: String,
    pub finally: bool,
    /// Direct upstream tasks (indices into [`Workflow::tasks`], all earlier).
    pub upstream: Vec<usize>,
    pub trigger: Trigger,
    pub when: Option<Condition>,
    pub for_each: Option<ForEach>,
    pub max_parallel: Option<u32>,
    /// The job, its command, args and env values still templates.
    pub spec: JobSpecInput,
    /// DAG tasks whose outputs this task's command and env read.
    #[serde(default)]
    pub reads: Vec<usize>,
    /// DAG tasks whose outputs its `when` and `for_each` read.
    #[serde(default)]
    pub decide_reads: Vec<usize>,
}

/// A checked workflow: DAG tasks in topological order, then finally tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    pub params: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub tasks: Vec<Task>,
    /// `tasks[..dag_len]` are the DAG, the rest the finally tasks.
    pub dag_len: usize,
}

impl Workflow {
    /// The index of a task by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }

    /// Every task downstream of `from` (transitively), `from` included.
    pub fn downstream_of(&self, from: usize) -> BTreeSet<usize> {
        let mut set = BTreeSet::from([from]);
        for (i, t) in self.tasks.iter().enumerate().skip(from + 1) {
            if t.upstream.iter().any(|u| set.contains(u)) {
                set.insert(i);
            }
        }
        set
    }

    /// Fanned-out instances knowable statically (literal lists and list
    /// parameters' defaults; tasks not fanned out do not count).
    pub fn static_instances(&self) -> usize {
        self.tasks
            .iter()
            .map(|t| match &t.for_each {
                Some(ForEach::List(items)) => items.len(),
                Some(ForEach::Param(p)) => self
                    .params
                    .get(p)
                    .and_then(|v| param_list(v))
                    .map_or(0, |l| l.len()),
                _ => 0,
            })
            .sum()
    }
}

/// A parameter's value as a `for_each` list: it must be a JSON list.
pub fn param_list(value: &str) -> Option<Vec<String>> {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Array(items)) => Some(items.iter().map(json_item).collect()),
        _ => None,
    }
}

fn check_name(
    task: Option<&str>,
    field: &str,
    name: &str,
    max: usize,
) -> Result<(), ValidationError> {
    if name.len() > max || !template::is_name(name) {
        return Err(err(
            task,
            field,
            format!("{name:?} must be 1..={max} characters of letters, digits, '_' and '-'"),
        ));
    }
    Ok(())
}

/// Parses and validates a file's bytes (`.json` names are JSON, others YAML).
pub fn load(file_name: &str, bytes: &[u8]) -> Result<Workflow, ValidationError> {
    validate(crate::file::parse_named(file_name, bytes)?)
}

/// Validates a parsed file.
pub fn validate(file: WorkflowFile) -> Result<Workflow, ValidationError> {
    check_name(None, "name", &file.name, augur_core::spec::MAX_NAME)?;
    for key in file.params.keys() {
        check_name(None, "params", key, MAX_TASK_NAME)?;
    }
    let timeout_ms = match &file.timeout {
        None => None,
        Some(t) => Some(
            augur_core::spec::parse_duration("timeout", t)
                .map_err(|e| err(None, "timeout", e.reason))?
                .as_millis() as u64,
        ),
    };
    if file.tasks.is_empty() {
        return Err(err(None, "tasks", "a workflow needs at least one task"));
    }

    // Names: tasks and finally share one namespace.
    let mut seen = BTreeSet::new();
    for t in file.tasks.iter().chain(&file.finally) {
        check_name(Some(&t.name), "name", &t.name, MAX_TASK_NAME)?;
        if !seen.insert(t.name.as_str()) {
            return Err(err(
                Some(&t.name),
                "name",
                "is used by more than one task (tasks and finally share names)",
            ));
        }
    }
    let by_name: BTreeMap<&str, usize> = file
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();

    // depends_on, in file indices.
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(file.tasks.len());
    for t in &file.tasks {
        let mut d = Vec::new();
        for name in &t.depends_on {
            let Some(&j) = by_name.get(name.as_str()) else {
                let reason = if file.finally.iter().any(|f| &f.name == name) {
                    format!("{name:?} is a finally task, which nothing may depend on")
                } else {
                    format!("{name:?} is not a task of this workflow")
                };
                return Err(err(Some(&t.name), "depends_on", reason));
            };
            if !d.contains(&j) {
                d.push(j);
            }
        }
        deps.push(d);
    }
    for t in &file.finally {
        if !t.depends_on.is_empty() {
            return Err(err(
                Some(&t.name),
                "depends_on",
                "a finally task runs after the whole DAG and takes no depends_on",
            ));
        }
        if t.trigger.is_some() {
            return Err(err(
                Some(&t.name),
                "trigger",
                "a finally task always runs and takes no trigger",
            ));
        }
    }
    let order = topological_order(&file.tasks, &deps)?;
    let mut position = vec![0usize; file.tasks.len()];
    for (pos, &i) in order.iter().enumerate() {
        position[i] = pos;
    }

    // Transitive upstream of each task, in new indices.
    let mut ancestors: Vec<BTreeSet<usize>> = Vec::with_capacity(order.len());
    for &i in &order {
        let mut set = BTreeSet::new();
        for &d in &deps[i] {
            let p = position[d];
            set.insert(p);
            set.extend(ancestors[p].iter().copied());
        }
        ancestors.push(set);
    }
    let dag_len = order.len();
    let dag_names: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(pos, &i)| (file.tasks[i].name.as_str(), pos))
        .collect();
    let all_dag: BTreeSet<usize> = (0..dag_len).collect();

    let mut tasks = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        let t = &file.tasks[i];
        let mut upstream: Vec<usize> = deps[i].iter().map(|&d| position[d]).collect();
        upstream.sort_unstable();
        let scope = Scope {
            params: &file.params,
            dag_names: &dag_names,
            upstream: &ancestors[pos],
        };
        tasks.push(check_task(t, false, upstream, &scope)?);
    }
    for t in &file.finally {
        let scope = Scope {
            params: &file.params,
            dag_names: &dag_names,
            upstream: &all_dag,
        };
        tasks.push(check_task(t, true, Vec::new(), &scope)?);
    }
    let workflow = Workflow {
        name: file.name,
        params: file.params,
        timeout_ms,
        tasks,
        dag_len,
    };
    let n = workflow.static_instances();
    if n > MAX_INSTANCES {
        return Err(err(
            None,
            "tasks",
            format!("make {n} fanned-out task instances, the limit is {MAX_INSTANCES}"),
        ));
    }
    Ok(workflow)
}

/// Kahn's algorithm, stable in file order; a cycle is named.
fn topological_order(
    tasks: &[TaskFile],
    deps: &[Vec<usize>],
) -> Result<Vec<usize>, ValidationError> {
    let n = tasks.len();
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            down[j].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &k in &down[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                ready.insert(k);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every task left is on or behind a cycle: walk upstream from one until
    // a task repeats.
    let left: Vec<usize> = (0..n).filter(|&i| indegree[i] > 0).collect();
    let mut path: Vec<usize> = Vec::new();
    let mut at = left[0];
    loop {
        if let Some(start) = path.iter().position(|&p| p == at) {
            let mut cycle: Vec<&str> = path[start..]
                .iter()
                .rev()
                .map(|&p| tasks[p].name.as_str())
                .collect();
            let first = cycle[0];
            cycle.push(first);
            return Err(err(
                Some(first),
                "depends_on",
                format!("is part of a cycle: {}", cycle.join(" -> ")),
            ));
        }
        path.push(at);
        match deps[at].iter().find(|&&d| indegree[d] > 0) {
            Some(&d) => at = d,
            None => {
                return Err(err(
                    Some(&tasks[at].name),
                    "depends_on",
                    "is part of a cycle",
                ))
            }
        }
    }
}

struct Scope<'a> {
    params: &'a BTreeMap<String, String>,
    dag_names: &'a BTreeMap<&'a str, usize>,
    /// Tasks whose outputs this task may use.
    upstream: &'a BTreeSet<usize>,
}

fn check_references(
    task: &str,
    field: &str,
    text: &str,
    has_item: bool,
    scope: &Scope<'_>,
) -> Result<(), ValidationError> {
    let refs = template::references(text).map_err(|e| err(Some(task), field, e.to_string()))?;
    for r in refs {
        match &r {
            Reference::Param(p) if !scope.params.contains_key(p) => {
                return Err(err(
                    Some(task),
                    field,
                    format!(
                        "`${{{{ {r} }}}}`: there is no parameter {p:?} (declare it under params)"
                    ),
                ));
            }
            Reference::Output { task: t, .. } => match scope.dag_names.get(t.as_str()) {
                Some(i) if scope.upstream.contains(i) => {}
                Some(_) => {
                    return Err(err(Some(task), field, format!("`${{{{ {r} }}}}`: task {t:?} is not upstream of this task (add it to depends_on)")));
                }
                None => {
                    return Err(err(
                        Some(task),
                        field,
                        format!("`${{{{ {r} }}}}`: there is no task {t:?} in the DAG"),
                    ));
                }
            },
            Reference::Item if !has_item => {
                return Err(err(
                    Some(task),
                    field,
                    "`${{ item }}` is only defined in a task with for_each",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_task(
    t: &TaskFile,
    finally: bool,
    upstream: Vec<usize>,
    scope: &Scope<'_>,
) -> Result<Task, ValidationError> {
    let name = t.name.as_str();
    let task = Some(name);
    let has_item = t.for_each.is_some();

    let for_each = match &t.for_each {
        None => None,
        Some(ForEachFile::List(items)) => {
            Some(ForEach::List(items.iter().map(json_item).collect()))
        }
        Some(ForEachFile::Reference(text)) => {
            let refs =
                template::parse(text.trim()).map_err(|e| err(task, "for_each", e.to_string()))?;
            let r = match refs.as_slice() {
                [template::Segment::Ref(r)] => r.clone(),
                _ => return Err(err(task, "for_each", format!("{text:?} is not a list: write a literal list, `${{{{ params.X }}}}` or `${{{{ tasks.T.outputs.K }}}}`"))),
            };
            check_references(name, "for_each", text, false, scope)?;
            match r {
                Reference::Param(p) => {
                    let value = scope.params.get(&p).map(String::as_str).unwrap_or_default();
                    if param_list(value).is_none() {
                        return Err(err(task, "for_each", format!("parameter {p:?} is {value:?}, not a JSON list such as [\"a\", \"b\"]")));
                    }
                    Some(ForEach::Param(p))
                }
                Reference::Output { task: up, key } => {
                    let index = scope.dag_names.get(up.as_str()).copied().unwrap_or_default();
                    Some(ForEach::Output { task: index, key })
                }
                other => return Err(err(task, "for_each", format!("`${{{{ {other} }}}}` is not a list: use a parameter, an upstream output or a literal list"))),
            }
        }
    };
    if t.max_parallel == Some(0) {
        return Err(err(task, "max_parallel", "must be at least 1"));
    }
    let when = match &t.when {
        None => None,
        Some(text) => {
            let c = Condition::parse(text).map_err(|e| err(task, "when", e.to_string()))?;
            for tpl in c.templates() {
                // `when` is evaluated once per task, before any item exists.
                check_references(name, "when", tpl, false, scope)?;
            }
            Some(c)
        }
    };

    let Some((program, args)) = t.command.split_first() else {
        return Err(err(
            task,
            "command",
            "must not be empty: write [program, args...]",
        ));
    };
    for (i, part) in t.command.iter().enumerate() {
        check_references(name, &format!("command[{i}]"), part, has_item, scope)?;
    }
    for (k, v) in &t.env {
        check_references(name, &format!("env[{k:?}]"), v, has_item, scope)?;
    }

    let resources = t.resources.clone().unwrap_or_default();
    let cpu_millis = match &resources.cpu {
        None => 0,
        Some(c) => {
            quantity::parse_cpu_millis(c).map_err(|e| err(task, "resources.cpu", e.to_string()))?
        }
    };
    let memory_bytes = match &resources.memory {
        None => 0,
        Some(m) => quantity::parse_memory_bytes(m)
            .map_err(|e| err(task, "resources.memory", e.to_string()))?,
    };
    if t.retries >= augur_core::spec::MAX_ATTEMPTS {
        return Err(err(
            task,
            "retries",
            format!(
                "{} is more than the limit of {}",
                t.retries,
                augur_core::spec::MAX_ATTEMPTS - 1
            ),
        ));
    }
    let backoff = t.backoff.clone().unwrap_or_default();
    let spec = JobSpecInput {
        name: name.to_string(),
        command: program.clone(),
        args: args.to_vec(),
        env: t.env.clone(),
        working_dir: t.working_dir.clone().unwrap_or_default(),
        labels: t.labels.clone(),
        priority: t.priority,
        timeout: t.timeout.clone().unwrap_or_default(),
        retry: augur_core::spec::RetryInput {
            max_attempts: t.retries + 1,
            initial_backoff: backoff.initial.unwrap_or_default(),
            max_backoff: backoff.max.unwrap_or_default(),
            multiplier: backoff.multiplier,
        },
        resources: augur_core::spec::ResourcesInput {
            slots: resources.slots,
            cpu_millis,
            memory_bytes,
        },
        idempotency_key: String::new(),
        constraints: t.constraints.clone(),
    };
    // Job fields are checked with every reference replaced by a dummy value.
    let dummy = render_spec(&spec, |_| Ok("x".to_string()))
        .map_err(|e| err(task, "command", e.to_string()))?;
    dummy
        .validate()
        .map_err(|e| err(task, file_field(&e.field), e.reason))?;

    Ok(Task {
        name: t.name.clone(),
        finally,
        upstream,
        trigger: t.trigger.unwrap_or_default(),
        when,
        for_each,
        max_parallel: t.max_parallel,
        reads: reads(t, scope, false),
        decide_reads: reads(t, scope, true),
        spec,
    })
}

/// The DAG tasks whose outputs a (checked) task file references: in its
/// `when` and `for_each` (`decide`), or in its command and env.
fn reads(t: &TaskFile, scope: &Scope<'_>, decide: bool) -> Vec<usize> {
    let mut texts: Vec<&str> = Vec::new();
    if decide {
        texts.extend(t.when.as_deref());
        if let Some(ForEachFile::Reference(r)) = &t.for_each {
            texts.push(r);
        }
    } else {
        texts.extend(t.command.iter().map(String::as_str));
        texts.extend(t.env.values().map(String::as_str));
    }
    let mut out: BTreeSet<usize> = BTreeSet::new();
    for text in texts {
        for r in template::references(text).unwrap_or_default() {
            if let Reference::Output { task, .. } = r {
                out.extend(scope.dag_names.get(task.as_str()));
            }
        }
    }
    out.into_iter().collect()
}

/// A job spec's field name (`spec.retry.max_attempts`) as the file names it.
fn file_field(field: &str) -> String {
    let f = field.strip_prefix("spec.").unwrap_or(field);
    if f == "command" {
        return "command[0]".to_string();
    }
    if let Some(rest) = f.strip_prefix("args[") {
        if let Some(n) = rest.strip_suffix(']').and_then(|n| n.parse::<usize>().ok()) {
            return format!("command[{}]", n + 1);
        }
    }
    match f {
        "args" => "command".to_string(),
        "retry.max_attempts" => "retries".to_string(),
        "retry.initial_backoff" => "backoff.initial".to_string(),
        "retry.max_backoff" => "backoff.max".to_string(),
        "retry.multiplier" => "backoff.multiplier".to_string(),
        "resources.cpu_millis" => "resources.cpu".to_string(),
        "resources.memory_bytes" => "resources.memory".to_string(),
        other => other.to_string(),
    }
}

/// Renders the templated fields of a spec (command, args, env values).
pub fn render_spec(
    spec: &JobSpecInput,
    mut resolve: impl FnMut(&Reference) -> Result<String, String>,
) -> Result<JobSpecInput, template::RenderError> {
    let mut out = spec.clone();
    out.command = template::render_with(&spec.command, &mut resolve)?;
    out.args = spec
        .args
        .iter()
        .map(|a| template::render_with(a, &mut resolve))
        .collect::<Result<_, _>>()?;
    for v in out.env.values_mut() {
        *v = template::render_with(v, &mut resolve)?;
    }
    Ok(out)
}
