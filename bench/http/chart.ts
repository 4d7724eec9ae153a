// A dependency-free SVG bar chart: requests/s as a ratio of raw undici, one group per client,
// one bar per body size, with the 0.9x target marked.
export interface Bar {
  readonly client: string
  readonly values: ReadonlyArray<{ readonly series: string; readonly ratio: number }>
}

const COLORS = ["#3b6ea8", "#e0913a", "#5a9e5a"]
const escape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

export const svg = (title: string, bars: ReadonlyArray<Bar>, target = 0.9): string => {
  const series = [...new Set(bars.flatMap((b) => b.values.map((v) => v.series)))]
  const labelWidth = 300
  const plotWidth = 460
  const barHeight = 14
  const groupHeight = series.length * barHeight + 12
  const top = 50
  const height = top + bars.length * groupHeight + 40
  const max = Math.max(1.1, ...bars.flatMap((b) => b.values.map((v) => v.ratio)))
  const x = (ratio: number) => labelWidth + (ratio / max) * plotWidth
  const out: Array<string> = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${labelWidth + plotWidth + 60}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${escape(title)}</text>`
  ]
  series.forEach((name, i) => {
    out.push(`<rect x="${labelWidth + i * 120}" y="30" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/>`)
    out.push(`<text x="${labelWidth + i * 120 + 14}" y="39">${escape(name)}</text>`)
  })
  const axisY = top + bars.length * groupHeight
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    out.push(`<line x1="${x(tick)}" y1="${top - 4}" x2="${x(tick)}" y2="${axisY}" stroke="#ddd"/>`)
    out.push(`<text x="${x(tick)}" y="${axisY + 14}" text-anchor="middle">${tick}x</text>`)
  }
  bars.forEach((bar, g) => {
    const y0 = top + g * groupHeight
    out.push(`<text x="${labelWidth - 8}" y="${y0 + groupHeight / 2}" text-anchor="end">${escape(bar.client)}</text>`)
    bar.values.forEach((v) => {
      const i = series.indexOf(v.series)
      const y = y0 + i * barHeight
      out.push(
        `<rect x="${labelWidth}" y="${y}" width="${Math.max(1, x(v.ratio) - labelWidth).toFixed(1)}" height="${barHeight - 2}" fill="${COLORS[i % COLORS.length]}"/>`
      )
      out.push(`<text x="${(x(v.ratio) + 4).toFixed(1)}" y="${y + barHeight - 4}">${v.ratio.toFixed(2)}x</text>`)
    })
  })
  out.push(
    `<line x1="${x(target)}" y1="${top - 4}" x2="${x(target)}" y2="${axisY}" stroke="#c33" stroke-dasharray="4 3"/>`,
    `<text x="${x(target)}" y="${axisY + 28}" text-anchor="middle" fill="#c33">target ${target}x</text>`,
    "</svg>"
  )
  return `${out.join("\n")}\n`
}
