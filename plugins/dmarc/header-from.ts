/** The RFC5322.From domains of a message, from its header section. */

/** The `From:` fields' unfolded values. */
export function fromFields(header: string): string[] {
  const out: string[] = [];
  for (const field of header.split(/\r\n(?![ \t])/)) {
    const m = /^from[ \t]*:(.*)$/is.exec(field);
    if (m?.[1] !== undefined) out.push(m[1].replace(/\r\n/g, ''));
  }
  return out;
}

/** Author domains of one From value: `<a@b>` forms, else bare `a@b` (lower case). */
export function authorDomains(value: string): string[] {
  const noComments = value.replace(/\([^()]*\)/g, ' ').replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const angle = [...noComments.matchAll(/<[^<>@]*@([^<>\s]+)>/g)].map((m) => m[1] ?? '');
  const found =
    angle.length > 0 ? angle : [...noComments.matchAll(/[^\s,<>:;]+@([^\s,<>;]+)/g)].map((m) => m[1] ?? '');
  return found.map((d) => d.toLowerCase().replace(/\.$/, '')).filter((d) => d !== '');
}
