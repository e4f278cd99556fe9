/** The odometer is integrated distance: it adds exactly the metres the vehicle moved along its route. */
export function odometerAfter(odometerM: number, dsM: number): number {
  return odometerM + dsM
}
