// Amounts stay bigints in the asset's smallest unit until they are shown; nothing goes through floats.
import { formatUnits } from "../vendor/ethers.min.js";

/** "0.000099179999999999 ETH": every digit, no trailing zeros (as `pm balance` prints it). */
export function formatAmount(amount, asset) {
  return `${trimUnits(amount, asset.decimals)} ${asset.symbol}`;
}

export function trimUnits(amount, decimals) {
  const text = formatUnits(amount, decimals);
  return text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
}

/** part / whole as a percentage with `digits` decimals, exact integer math, rounded down. */
export function percentOf(part, whole, digits = 4) {
  if (whole === 0n) return "0%";
  const unit = 10n ** BigInt(digits);
  const scaled = (part * 100n * unit) / whole;
  const fraction = (scaled % unit).toString().padStart(digits, "0");
  return `${scaled / unit}.${fraction}%`;
}

export function shortAddress(address) {
  return `${address.slice(0, 6)}…${address.slice(-4)}`;
}

export function shortHash(hash) {
  return `${hash.slice(0, 10)}…`;
}

export function formatTime(seconds) {
  return new Date(Number(seconds) * 1000).toISOString().replace(".000Z", "Z");
}

/** RFC 4180 CSV: every field quoted when it holds a quote, a comma or a line break. */
export function toCsv(rows) {
  const field = (value) => {
    const text = String(value);
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  return rows.map((row) => row.map(field).join(",")).join("\r\n") + "\r\n";
}
