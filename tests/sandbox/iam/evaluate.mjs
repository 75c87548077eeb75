// Evaluates the requests tests/sandbox/iam_recorder.py recorded against the policies the requesting role had at
// the time, with @cloud-copilot/iam-simulate (a condition-aware IAM policy evaluator), and prints one JSON report:
//
//   {"requests": n, "authorizations": n, "pairs": ["ec2:CreateFleet launch-template", ...],
//    "denies": [{"action", "resource", "operation", "decision", "count", "reasons": [...]}],
//    "unmapped": ["service:Operation", ...], "errors": [...], "statementsUsed": [Sid, ...], "statementsUnused": [...]}
//
// Usage: node evaluate.mjs --log FILE [--log FILE ...] [--session NAME] [--credential ACCESS_KEY_ID] [--simulator DIR]
//   --session    only requests of role sessions of this name (the controllers the tests start)
//   --credential only requests signed with this access key (one assumption of a role: a test's own)
//   --simulator  where `npm ci` installed this directory's package.json (default: this directory)
// Exit status 0 when it could evaluate (the report says what was denied), 2 when it could not.

import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

function options(argv) {
  const parsed = { simulator: path.dirname(fileURLToPath(import.meta.url)), logs: [] }
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]]
    if (value === undefined) throw new Error(`${flag} needs a value`)
    if (flag === '--log') parsed.logs.push(value)
    else if (flag === '--credential') parsed.credential = value
    else if (flag === '--session') parsed.session = value
    else if (flag === '--simulator') parsed.simulator = value
    else throw new Error(`unknown option ${flag}`)
  }
  if (parsed.logs.length === 0) throw new Error('--log FILE is required')
  return parsed
}

// "arn:aws:ec2:r:a:launch-template/lt-1" -> "launch-template"; "*" -> "*".
function resourceType(arn) {
  if (arn === '*') return '*'
  const [, , service, , , rest = ''] = arn.split(':')
  if (service === 'sqs') return 'queue'
  return rest.split('/')[0] || rest
}

function statementName(analysed) {
  return analysed.explain?.identifier ?? analysed.statement?.Sid ?? analysed.statement?.sid ?? '(no Sid)'
}

// Why a request was denied, from the simulator's explanation: the statements that grant the action on the resource
// and the condition keys each of them found missing or different.
function reasons(analysis, action, resource) {
  const identity = analysis.identityAnalysis ?? {}
  const out = []
  for (const denied of identity.denyStatements ?? []) {
    out.push({ statement: statementName(denied), explicitDeny: true })
  }
  const candidates = (identity.unmatchedStatements ?? []).filter((s) => s.actionMatch && s.resourceMatch)
  for (const candidate of candidates) {
    const conditions = (candidate.explain?.conditions ?? []).filter((c) => !c.matches)
    out.push({
      statement: statementName(candidate),
      failedConditions: conditions.map((c) => ({
        key: c.conditionKeyValue,
        operator: c.operator,
        expected: Array.isArray(c.values) ? c.values.map((v) => v.value) : c.values?.value,
        got: c.resolvedConditionKeyValue ?? (c.failedBecauseMissing ? null : undefined),
      })),
    })
  }
  if (out.length === 0) out.push({ noStatement: `no statement grants ${action} on ${resource}` })
  return out
}

function simulation(entry, documents, authorization) {
  return {
    request: {
      principal: entry.principal,
      action: authorization.action,
      resource: { resource: authorization.resource, accountId: entry.account },
      contextVariables: authorization.context ?? {},
    },
    identityPolicies: documents.map((d) => ({ name: d.name, policy: d.document })),
    serviceControlPolicies: [],
    resourceControlPolicies: [],
  }
}

function statementNames(policySets, entries) {
  const names = new Set()
  for (const id of new Set(entries.map((e) => e.policies))) {
    for (const document of policySets.get(id) ?? []) {
      const statements = [document.document?.Statement ?? []].flat()
      for (const statement of statements) names.add(statement.Sid ?? '(no Sid)')
    }
  }
  return names
}

// An ARN with no account: a resource AWS itself owns.
function awsOwned(arn) {
  const parts = arn.split(':')
  return parts.length >= 6 && parts[4] === ''
}

async function main() {
  const opts = options(process.argv.slice(2))
  const require = createRequire(path.join(path.resolve(opts.simulator), 'package.json'))
  const { runSimulation, runUnsafeSimulation } = require('@cloud-copilot/iam-simulate')

  const policySets = new Map()
  const entries = []
  const errors = []
  // Several sandboxes' logs (make test runs two): policy sets are named by their content, so one read in two logs
  // is the same set.
  const lines = opts.logs.flatMap((log) =>
    readFileSync(log, 'utf8')
      .split('\n')
      .map((line, index) => [`${log}:${index + 1}`, line]),
  )
  for (const [where, line] of lines) {
    if (!line.trim()) continue
    let entry
    try {
      entry = JSON.parse(line)
    } catch (error) {
      errors.push(`${where}: not JSON (${error.message})`)
      continue
    }
    if (entry.policy_set) policySets.set(entry.policy_set, entry.documents)
    else if (entry.error) errors.push(`${entry.operation}: the recorder failed: ${entry.error}`)
    else if (
      (!opts.credential || entry.credential === opts.credential) &&
      (!opts.session || entry.session === opts.session)
    )
      entries.push(entry)
  }

  const pairs = new Set()
  const denies = new Map()
  const unmapped = new Set()
  const used = new Set()
  const unattributed = new Set()
  let authorizations = 0
  // Many requests are alike (the same Describe* every few seconds): evaluate each distinct one once.
  const decided = new Map()
  for (const entry of entries) {
    if (entry.unmapped) {
      unmapped.add(entry.operation)
      continue
    }
    const documents = policySets.get(entry.policies)
    if (!documents) {
      errors.push(`${entry.operation}: policy set ${entry.policies} is not in the log`)
      continue
    }
    for (const authorization of entry.authorizations) {
      authorizations += 1
      pairs.add(`${authorization.action} ${resourceType(authorization.resource)}`)
      const key = JSON.stringify([entry.principal, entry.policies, authorization])
      let outcome = decided.get(key)
      if (!outcome) {
        const result = await runSimulation(simulation(entry, documents, authorization), {})
        if (result.resultType === 'error' && result.errors?.message === 'no.resource.types' && awsOwned(authorization.resource)) {
          // The service reference's ARN patterns want an account, which AWS's own public resources (the SSM
          // parameters under /aws/service/) do not have: evaluate those without the ARN check.
          const decision = runUnsafeSimulation(simulation(entry, documents, authorization), {})
          outcome = {
            decision,
            unattributed: true,
            reasons: [{ noStatement: `no statement grants ${authorization.action} on ${authorization.resource}` }],
          }
        } else if (result.resultType === 'error') {
          outcome = { decision: 'Error', reasons: [{ error: result.errors?.message ?? JSON.stringify(result.errors) }] }
        } else if (result.overallResult === 'Allowed') {
          const analyses = result.resultType === 'single' ? [result.result] : (result.results ?? [])
          const granting = analyses.flatMap((r) => r.analysis?.identityAnalysis?.allowStatements ?? [])
          outcome = { decision: 'Allowed', granting: granting.map(statementName) }
        } else {
          const analysis = result.resultType === 'single' ? result.result.analysis : result.results?.[0]?.analysis
          outcome = {
            decision: result.overallResult,
            reasons: analysis ? reasons(analysis, authorization.action, authorization.resource) : [],
          }
        }
        decided.set(key, outcome)
      }
      if (outcome.decision === 'Allowed') {
        for (const name of outcome.granting ?? []) used.add(name)
        if (outcome.unattributed) unattributed.add(`${authorization.action} ${resourceType(authorization.resource)}`)
        continue
      }
      const denyKey = JSON.stringify([authorization.action, resourceType(authorization.resource), outcome.reasons])
      const known = denies.get(denyKey)
      if (known) known.count += 1
      else {
        denies.set(denyKey, {
          action: authorization.action,
          resource: authorization.resource,
          operation: entry.operation,
          principal: entry.principal,
          decision: outcome.decision,
          count: 1,
          reasons: outcome.reasons,
        })
      }
    }
  }
  const report = {
    requests: entries.length,
    authorizations,
    pairs: [...pairs].sort(),
    denies: [...denies.values()],
    unmapped: [...unmapped].sort(),
    errors,
    // Statements that granted at least one request, and those of the evaluated policies that granted none (pairs
    // allowed through the unchecked path are not attributed to a statement: `unattributed`).
    statementsUsed: [...used].sort(),
    unattributed: [...unattributed].sort(),
    statementsUnused: [...statementNames(policySets, entries)].filter((name) => !used.has(name)).sort(),
  }
  process.stdout.write(JSON.stringify(report, null, 2) + '\n')
}

main().catch((error) => {
  process.stderr.write(`evaluate.mjs: ${error.stack ?? error}\n`)
  process.exit(2)
})
