// The real `yjs` package's side of tests/interop/test_yjs.py.
//
//   node yjs_check.mjs load FILE   apply the Yjs v1 update in FILE to a new Y.Doc and print, as
//                                  JSON, {services, tasks, shared}: each root Map's toJSON()
//                                  (a Y.Text gives its string). Exits 2 if part of the update
//                                  could not be integrated (missing predecessors).
//   node yjs_check.mjs make FILE   build a Y.Doc with Maps, Arrays, Text, nesting and scalars,
//                                  write Y.encodeStateAsUpdate(doc) to FILE and print the JSON
//                                  `load` would print for it.
import { readFileSync, writeFileSync } from 'node:fs'
import * as Y from 'yjs'

const ROOTS = ['services', 'tasks', 'shared']

function dump (doc) {
  const out = {}
  for (const name of ROOTS) out[name] = doc.getMap(name).toJSON()
  return JSON.stringify(out)
}

function load (file) {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, readFileSync(file))
  if (doc.store.pendingStructs !== null || doc.store.pendingDs !== null) {
    console.error('update has missing predecessors')
    process.exit(2)
  }
  console.log(dump(doc))
}

function make (file) {
  const doc = new Y.Doc()
  doc.transact(() => {
    const services = doc.getMap('services')
    const web = new Y.Map()
    services.set('web', web)
    const spec = new Y.Map()
    web.set('spec', spec)
    spec.set('image', 'nginx:1.27')
    spec.set('port', 8080)
    spec.set('big', 2 ** 40) // beyond int32: lib0 writes it as a float64
    spec.set('ratio', 0.25)
    spec.set('enabled', true)
    spec.set('labels', { tier: 'front', weights: [1, 2.5, -3] }) // a plain object, not a Y.Map
    const placement = new Y.Array()
    web.set('placement', placement)
    placement.push(['0123456789abcdef0123456789abcdef', 'fedcba9876543210fedcba9876543210'])

    const tasks = doc.getMap('tasks')
    const job = new Y.Map()
    tasks.set('job-1', job)
    const steps = new Y.Array()
    job.set('steps', steps)
    for (let i = 0; i < 3; i++) {
      const step = new Y.Map()
      steps.push([step])
      step.set('n', i)
      step.set('done', i === 0)
    }
    steps.get(2).set('nested', new Y.Array())
    steps.get(2).get('nested').push([null, false, -7, 'ünïcødé ✓ 🚀'])
    const log = new Y.Text()
    job.set('log', log)
    log.insert(0, 'world')
    log.insert(0, 'hello ')
    log.format(0, 5, { bold: true }) // formatting is not part of toJSON()
    log.insert(11, '!')

    const shared = doc.getMap('shared')
    shared.set('nothing', null)
    shared.set('negative', -42)
    shared.set('pi', 3.141592653589793)
    shared.set('empty_map', new Y.Map())
    shared.set('empty_list', new Y.Array())
    shared.set('notes', new Y.Text('zwei Wörter'))
  })
  writeFileSync(file, Y.encodeStateAsUpdate(doc))
  console.log(dump(doc))
}

const [mode, file] = process.argv.slice(2)
if (mode === 'load' && file) load(file)
else if (mode === 'make' && file) make(file)
else {
  console.error('usage: node yjs_check.mjs load|make FILE')
  process.exit(1)
}
