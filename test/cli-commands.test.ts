import { describe, expect, it } from 'vitest'
import { commandsFor } from '../src/cli/main.ts'

describe('which command modules a command line loads', () => {
  it('its own command only, run for a line that starts with a flag, every one for help or a typo', () => {
    expect(commandsFor(['broker', '--port', '0'])).toEqual(['broker'])
    expect(commandsFor(['devices', '--help'])).toEqual(['devices'])
    expect(commandsFor([])).toEqual(['run'])
    expect(commandsFor(['--devices', 'person:10'])).toEqual(['run'])
    const all = commandsFor(['--help'])
    expect(all).toContain('run')
    expect(all).toContain('coordinator')
    expect(all.length).toBeGreaterThan(10)
    expect(commandsFor(['brokr'])).toEqual(all)
    expect(commandsFor(['--version'])).toEqual(all)
    // A name that is an Object property is no command.
    expect(commandsFor(['toString'])).toEqual(all)
  })
})
