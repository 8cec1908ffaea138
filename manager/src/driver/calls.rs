//! The driver's agent requests, which run beside the sampler: started by an epoch's decision,
//! polled every epoch (and often while the driver waits), reported to the policy when they
//! answer. The agent service bounds each with its deadline, so every request gets an outcome.

use std::time::Instant;

use ballast_agent::AgentError;

use super::ports::{AgentAnswer, AgentReply, AgentRequest};
use super::Driver;
use crate::policy::{Outcome, Step};

/// An agent request under way.
pub(super) struct Call {
    request: AgentRequest,
    reply: AgentReply,
    started: Instant,
}

impl Call {
    fn step(&self) -> Step {
        match self.request {
            AgentRequest::File { .. } => Step::File,
            AgentRequest::Anon { .. } => Step::Anon,
        }
    }

    fn outcome(&self, result: Result<AgentAnswer, AgentError>) -> Outcome {
        match (self.request, result) {
            (AgentRequest::File { pages }, Ok(answer)) => Outcome::FileDeactivated {
                asked: pages,
                freed: answer.claimed_pages,
            },
            (AgentRequest::Anon { pages, .. }, Ok(answer)) => Outcome::AnonDeactivated {
                asked: pages,
                deactivated: answer.claimed_pages,
            },
            (_, Err(e)) => Outcome::AgentFailed {
                step: self.step(),
                reason: e.to_string(),
            },
        }
    }
}

impl Driver {
    /// Starts `request` (or fails it at once without an agent).
    pub(super) fn start_call(&mut self, request: AgentRequest) {
        let reply = match self.parts.agent.as_mut() {
            Some(agent) => agent.start(request),
            None => AgentReply::ready(Err(AgentError::NoVsock)),
        };
        self.calls.push(Call {
            request,
            reply,
            started: Instant::now(),
        });
    }

    /// Reports the requests that answered (or ran out of time); whether any did.
    pub(super) fn collect_answers(&mut self) -> bool {
        let mut any = false;
        let mut i = 0;
        while i < self.calls.len() {
            let Some(result) = self.calls[i].reply.poll() else {
                i += 1;
                continue;
            };
            let call = self.calls.remove(i);
            if let Ok(AgentAnswer {
                file_passes: Some(passes),
                ..
            }) = &result
            {
                self.file_passes.add(passes);
            }
            let outcome = call.outcome(result);
            log::info!(
                "memory manager: {} -> {outcome} in {} ms",
                call.request,
                call.started.elapsed().as_millis()
            );
            self.policy.record(&outcome);
            self.policy.add_time(call.step(), call.started.elapsed());
            any = true;
        }
        any
    }

    pub(super) fn calls_pending(&self) -> bool {
        !self.calls.is_empty()
    }
}
