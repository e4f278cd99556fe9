// The English locale entry only: the package's main entry loads every locale (~1 s at start-up).
import { faker } from '@faker-js/faker/locale/en'
import type { DeviceModel } from '../model.ts'

const FIRST_NAMES = faker.rawDefinitions.person!.first_name!.generic!
const LAST_NAMES = faker.rawDefinitions.person!.last_name!.generic!

export interface PersonState {
  id: number
  name: string
  surname: string
  age: number
}

/**
 * The walkthrough's record `{id, name, surname, age}`: a new person per message, as the
 * walkthrough's boto3 producer sends. `id` counts up per device.
 */
export const person: DeviceModel<PersonState> = {
  name: 'person',
  description: 'the walkthrough record {id, name, surname, age}: faker names, age 18-80',
  init(ctx, rng) {
    return next(ctx.index * 1_000_000, rng)
  },
  step(state, _dtMs, rng) {
    return next(state.id, rng)
  },
  toPayload(s) {
    return { id: s.id, name: s.name, surname: s.surname, age: s.age }
  },
}

function next(prevId: number, rng: import('../rng.ts').Rng): PersonState {
  return {
    id: prevId + 1,
    name: rng.pick(FIRST_NAMES as string[]),
    surname: rng.pick(LAST_NAMES as string[]),
    age: rng.int(18, 80),
  }
}
