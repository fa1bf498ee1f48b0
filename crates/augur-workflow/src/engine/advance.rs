//! Moving a run forward: deciding tasks whose upstream is done, starting
//! waiting instances within `max_parallel`, ending the run.

use super::*;

impl RunState {
    /// Decides, starts and ends whatever can be; the effects to carry out.
    pub(super) fn advance(&mut self, workflow: &Workflow, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.is_finished() || !self.started {
            return effects;
        }
        // Outputs only change when a job ends, never inside this loop; only
        // those a task still to run reads are gathered.
        let readers: BTreeSet<usize> = workflow
            .tasks
            .iter()
            .zip(&self.tasks)
            .filter(|(_, run)| !run.done())
            .flat_map(|(task, run)| {
                let decide = if run.decided {
                    &[][..]
                } else {
                    &task.decide_reads[..]
                };
                task.reads.iter().chain(decide).copied()
            })
            .collect();
        let outputs = self.collect_outputs(workflow, &readers);
        loop {
            let mut changed = false;
            for t in 0..workflow.dag_len {
                if !self.tasks[t].decided
                    && workflow.tasks[t]
                        .upstream
                        .iter()
                        .all(|&u| self.tasks[u].done())
                {
                    self.decide(workflow, t, &outputs);
                    changed = true;
                }
            }
            if (0..workflow.dag_len).all(|t| self.tasks[t].done()) {
                for t in workflow.dag_len..workflow.tasks.len() {
                    if !self.tasks[t].decided {
                        self.decide(workflow, t, &outputs);
                        changed = true;
                    }
                }
            }
            for t in 0..workflow.tasks.len() {
                changed |= self.start_waiting(workflow, t, &outputs, &mut effects);
            }
            if !changed {
                break;
            }
        }
        if self.tasks.iter().all(TaskRun::done) {
            let failed = self
                .tasks
                .iter()
                .any(|t| t.instances.iter().any(|i| i.state.is_bad()));
            let outcome = if failed {
                RunOutcome::Failed
            } else {
                RunOutcome::Succeeded
            };
            effects.push(self.finish(outcome, now_ms));
        }
        effects
    }

    /// Every task's outputs by name; a fanned-out task's as JSON lists.
    fn collect_outputs(
        &self,
        workflow: &Workflow,
        only: &BTreeSet<usize>,
    ) -> BTreeMap<String, Outputs> {
        let mut all = BTreeMap::new();
        for &t in only {
            let run = &self.tasks[t];
            if !run.done() {
                continue;
            }
            let outputs = if run.fanned {
                let keys: BTreeSet<&String> = run
                    .instances
                    .iter()
                    .flat_map(|i| i.outputs.keys())
                    .collect();
                keys.into_iter()
                    .map(|k| {
                        let values = run
                            .instances
                            .iter()
                            .map(|i| {
                                i.outputs
                                    .get(k)
                                    .map_or(serde_json::Value::Null, output_json)
                            })
                            .collect();
                        (
                            k.clone(),
                            OutputValue::Json(serde_json::Value::Array(values)),
                        )
                    })
                    .collect()
            } else {
                run.instances
                    .first()
                    .map(|i| i.outputs.clone())
                    .unwrap_or_default()
            };
            if !outputs.is_empty() {
                all.insert(workflow.tasks[t].name.clone(), outputs);
            }
        }
        all
    }

    fn context<'a>(
        &'a self,
        outputs: &'a BTreeMap<String, Outputs>,
        item: Option<&'a str>,
    ) -> Context<'a> {
        Context {
            params: &self.params,
            outputs,
            item,
            workflow_id: &self.run_id,
            workflow_name: &self.workflow_name,
        }
    }

    /// Instances of fanned-out tasks (what [`MAX_INSTANCES`] bounds).
    fn instance_count(&self) -> usize {
        self.tasks
            .iter()
            .filter(|t| t.fanned)
            .map(|t| t.instances.len())
            .sum()
    }

    /// Evaluates a task's trigger, `when` and `for_each`.
    fn decide(&mut self, workflow: &Workflow, t: usize, outputs: &BTreeMap<String, Outputs>) {
        let task = &workflow.tasks[t];
        let states: Vec<InstanceState> = task
            .upstream
            .iter()
            .flat_map(|&u| self.tasks[u].instances.iter().map(|i| i.state))
            .collect();
        let verdict = if task.finally {
            Verdict::Run
        } else {
            trigger_verdict(task.trigger, &states)
        };
        match verdict {
            Verdict::Skip => {
                let why = format!("trigger {:?} does not hold", task.trigger);
                self.tasks[t].settle(InstanceState::Skipped, Some(why));
                return;
            }
            Verdict::UpstreamFailed => {
                self.tasks[t].settle(InstanceState::UpstreamFailed, None);
                return;
            }
            Verdict::Run => {}
        }
        let context = self.context(outputs, None);
        if let Some(when) = &task.when {
            match when.eval(&context) {
                Ok(true) => {}
                Ok(false) => {
                    self.tasks[t].settle(InstanceState::Skipped, Some("when is false".to_string()));
                    return;
                }
                Err(e) => {
                    self.tasks[t].settle(InstanceState::Failed, Some(format!("when: {e}")));
                    return;
                }
            }
        }
        let items: Option<Result<Vec<String>, String>> = task.for_each.as_ref().map(|f| match f {
            ForEach::List(items) => Ok(items.clone()),
            ForEach::Param(p) => {
                let value = self.params.get(p).map(String::as_str).unwrap_or_default();
                param_list(value).ok_or_else(|| {
                    format!("for_each: parameter {p:?} is {value:?}, not a JSON list")
                })
            }
            ForEach::Output { task: up, key } => {
                let name = &workflow.tasks[*up].name;
                match context.output(name, key) {
                    None => Err(format!("for_each: task {name:?} wrote no output {key:?}")),
                    Some(v) => v.as_list().ok_or_else(|| {
                        format!(
                            "for_each: tasks.{name}.outputs.{key} is {}, not a list (write it as {key}.lines or a JSON list in {key}.json)",
                            v.kind()
                        )
                    }),
                }
            }
        });
        let generation = self.tasks[t].generation;
        let room = MAX_INSTANCES.saturating_sub(self.instance_count());
        let run = &mut self.tasks[t];
        match items {
            None => {
                run.decided = true;
                run.placeholder = false;
                run.fanned = false;
                run.instances = vec![new_instance(None, generation)];
                run.recount();
            }
            Some(Err(message)) => run.settle(InstanceState::Failed, Some(message)),
            Some(Ok(items)) if items.is_empty() => run.settle(
                InstanceState::Skipped,
                Some("for_each list is empty".to_string()),
            ),
            Some(Ok(items)) if items.len() > room => run.settle(
                InstanceState::Failed,
                Some(format!(
                    "for_each: {} items would take the run over {MAX_INSTANCES} fanned-out task instances",
                    items.len()
                )),
            ),
            Some(Ok(items)) if items.iter().map(String::len).sum::<usize>() > MAX_ITEMS_BYTES => run
                .settle(
                    InstanceState::Failed,
                    Some(format!(
                        "for_each: the {} items are {} bytes in all, the limit is {MAX_ITEMS_BYTES}",
                        items.len(),
                        items.iter().map(String::len).sum::<usize>()
                    )),
                ),
            Some(Ok(items)) => {
                run.decided = true;
                run.placeholder = false;
                run.fanned = true;
                run.instances = items
                    .into_iter()
                    .map(|i| new_instance(Some(i), generation))
                    .collect();
                run.recount();
            }
        }
    }

    /// Starts waiting instances of task `t` up to its `max_parallel`.
    fn start_waiting(
        &mut self,
        workflow: &Workflow,
        t: usize,
        outputs: &BTreeMap<String, Outputs>,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let task = &workflow.tasks[t];
        let limit = task.max_parallel.map_or(usize::MAX, |m| m as usize);
        let mut changed = false;
        while self.tasks[t].running < limit {
            let k = self.tasks[t].cursor;
            let Some(instance) = self.tasks[t].instances.get(k) else {
                break;
            };
            if instance.state != InstanceState::Waiting {
                self.tasks[t].cursor += 1;
                continue;
            }
            let fanned = self.tasks[t].fanned;
            let item_index = fanned.then_some(k);
            let key = idempotency_key(&self.run_id, &task.name, item_index, instance.generation);
            let context = self.context(outputs, instance.item.as_deref());
            let spec = render_spec(&task.spec, |r| context.resolve(r))
                .map_err(|e| format!("command or env: {e}"))
                .and_then(|mut input| {
                    input.idempotency_key = key.clone();
                    input.validate().map_err(|e| e.to_string())
                });
            changed = true;
            match spec {
                Ok(spec) => {
                    self.tasks[t].set_state(k, InstanceState::Running);
                    effects.push(Effect::CreateJob {
                        task: task.name.clone(),
                        item: item_index,
                        spec: Box::new(spec),
                        idempotency_key: key,
                    });
                }
                Err(message) => {
                    self.tasks[t].set_state(k, InstanceState::Failed);
                    if let Some(instance) = self.tasks[t].instances.get_mut(k) {
                        instance.message = Some(message);
                    }
                }
            }
        }
        changed
    }
}

fn new_instance(item: Option<String>, generation: u32) -> Instance {
    Instance {
        item,
        state: InstanceState::Waiting,
        generation,
        outputs: Outputs::new(),
        message: None,
        interrupted: false,
        job_id: None,
        attempts: 0,
    }
}
