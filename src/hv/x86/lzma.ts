// LZMA, the range-coded LZ77 of Igor Pavlov's LZMA SDK (the format as the
// SDK's lzma-specification.txt describes it; the decoders this follows in
// behaviour are Linux's lib/xz/xz_dec_lzma2.c and lib/decompress_unlzma.c,
// which Xen carries as xen/common/unxz.c and unlzma.c), in the two wrappings
// a kernel comes in:
//   * LZMA2 (xz-file-format.txt section 5.3.1, xz_dec_lzma2.c): chunks of
//     LZMA or stored data inside an .xz block (unxz.ts);
//   * the legacy .lzma "alone" file of `lzma -9` / `xz --format=lzma`: a
//     13-byte header (properties, dictionary size, 64-bit uncompressed size
//     or all-ones for unknown, then an end marker ends the data) and one
//     LZMA stream.
//
// The whole output is in memory, so the output buffer is the dictionary (as
// Linux's single-call mode does): a match may reach back to the last
// dictionary reset, and no further. Output is never written past the limit
// the caller gives; every distance is checked before it is used; a stream
// that reads past its end is refused at the next symbol, so corrupt input
// ends in an LzmaError, never a hang or an out-of-bounds access.

export class LzmaError extends Error {
  override name = 'LzmaError';
}

// Range coder (lzma-specification.txt, "The range decoder").
/** kTopValue: the range is renormalized (a byte shifted in) below 2^24. */
const RC_TOP = 1 << 24;
/** kNumBitModelTotalBits: probabilities are 11-bit. */
const RC_BIT_MODEL_TOTAL_BITS = 11;
const RC_BIT_MODEL_TOTAL = 1 << RC_BIT_MODEL_TOTAL_BITS;
/** kNumMoveBits: how fast a probability adapts. */
const RC_MOVE_BITS = 5;
/** The range decoder starts on 5 bytes, the first always 0 (the encoder's cache starts so). */
const RC_INIT_BYTES = 5;

// LZMA model (lzma-specification.txt, LzmaSpec.cpp's constants).
/** kNumStates; states below kNumLitStates follow a literal. */
const STATES = 12;
const LIT_STATES = 7;
/** kNumPosBitsMax: pb <= 4, so up to 16 position states. */
const POS_STATES_BITS = 4;
/** kMatchMinLen. */
const MATCH_LEN_MIN = 2;
/** The length coder: choice, choice2, low[16][8], mid[16][8], high[256]. */
const LEN_LOW_BITS = 3;
const LEN_MID_BITS = 3;
const LEN_HIGH_BITS = 8;
const LEN_CHOICE = 0;
const LEN_CHOICE2 = 1;
const LEN_LOW = 2;
const LEN_MID = LEN_LOW + ((1 << POS_STATES_BITS) << LEN_LOW_BITS);
const LEN_HIGH = LEN_MID + ((1 << POS_STATES_BITS) << LEN_MID_BITS);
const LEN_CODER_SIZE = LEN_HIGH + (1 << LEN_HIGH_BITS);
/** kNumLenToPosStates: the distance slot's model depends on min(len - 2, 3). */
const DIST_STATES = 4;
const DIST_SLOT_BITS = 6;
/** kStartPosModelIndex, kEndPosModelIndex, kNumFullDistances, kNumAlignBits. */
const DIST_MODEL_START = 4;
const DIST_MODEL_END = 14;
const FULL_DISTANCES = 1 << (DIST_MODEL_END >> 1);
const ALIGN_BITS = 4;
/** A literal coder: 0x300 probabilities (256 plain, 512 matched). */
const LITERAL_CODER_SIZE = 0x300;
/** lc + lp <= 4: LZMA2's rule (xz-file-format.txt 5.3.1), and liblzma's for .lzma too. */
export const LZMA_LCLP_MAX = 4;
/** Properties byte: (pb * 5 + lp) * 9 + lc, pb <= 4, lp <= 4, lc <= 8. */
const PROPS_MAX = (4 * 5 + 4) * 9 + 8;
/** The distance an end-of-payload marker codes (all ones). */
const END_MARKER_DIST = -1;

// Offsets of each model in the one probability array.
const IS_MATCH = 0;
const IS_REP = IS_MATCH + (STATES << POS_STATES_BITS);
const IS_REP_G0 = IS_REP + STATES;
const IS_REP_G1 = IS_REP_G0 + STATES;
const IS_REP_G2 = IS_REP_G1 + STATES;
const IS_REP0_LONG = IS_REP_G2 + STATES;
const DIST_SLOT = IS_REP0_LONG + (STATES << POS_STATES_BITS);
const DIST_SPECIAL = DIST_SLOT + (DIST_STATES << DIST_SLOT_BITS);
const DIST_ALIGN = DIST_SPECIAL + FULL_DISTANCES - DIST_MODEL_END;
const MATCH_LEN_CODER = DIST_ALIGN + (1 << ALIGN_BITS);
const REP_LEN_CODER = MATCH_LEN_CODER + LEN_CODER_SIZE;
const LITERAL = REP_LEN_CODER + LEN_CODER_SIZE;
const PROBS_MAX = LITERAL + (LITERAL_CODER_SIZE << LZMA_LCLP_MAX);
/** A probability starts at one half. */
const PROB_INIT = RC_BIT_MODEL_TOTAL >> 1;

/** Why LzmaDecoder.run returned. */
export const RunEnd = {
  /** The output reached the limit (run with untilMarker false). */
  Limit: 0,
  /** An end-of-payload marker. */
  Marker: 1,
  /** A symbol would write past the limit; nothing past it was written. */
  Overrun: 2,
  /** A match reaches before the dictionary's start. */
  Distance: 3,
  /** The range decoder read past the end of its input. */
  Truncated: 4,
} as const;
export type RunEnd = (typeof RunEnd)[keyof typeof RunEnd];

/**
 * One LZMA decoder's state: the properties, the model, the four last
 * distances and the range decoder. LZMA2 keeps it from chunk to chunk,
 * resetting parts as each chunk's control byte says.
 */
export class LzmaDecoder {
  readonly probs = new Uint16Array(PROBS_MAX);
  lc = 0;
  lp = 0;
  pb = 0;
  state = 0;
  rep0 = 0;
  rep1 = 0;
  rep2 = 0;
  rep3 = 0;
  /** Range decoder: range and code as int32 bit patterns of the unsigned values, and the next input byte. */
  range = 0;
  code = 0;
  ip = 0;
  /** Why the last run returned, and the distance that ended it with RunEnd.Distance. */
  end: RunEnd = RunEnd.Limit;
  distance = 0;

  /** Takes a properties byte (lc, lp, pb); LzmaError for one out of range. */
  setProps(props: number): void {
    if (props > PROPS_MAX) throw new LzmaError(`LZMA properties byte 0x${props.toString(16)} is out of range (at most 0x${PROPS_MAX.toString(16)})`);
    this.pb = Math.floor(props / (9 * 5));
    props -= this.pb * 9 * 5;
    this.lp = Math.floor(props / 9);
    this.lc = props - this.lp * 9;
    if (this.lc + this.lp > LZMA_LCLP_MAX) throw new LzmaError(`LZMA properties lc=${this.lc} lp=${this.lp}: lc + lp is more than ${LZMA_LCLP_MAX}`);
  }

  /** State reset: the model back to even odds, the distances to 0. */
  reset(): void {
    this.probs.fill(PROB_INIT, 0, LITERAL + (LITERAL_CODER_SIZE << (this.lc + this.lp)));
    this.state = 0;
    this.rep0 = this.rep1 = this.rep2 = this.rep3 = 0;
  }

  /** Starts the range decoder on `input` at `at`; false if its first byte is not 0 or fewer than 5 bytes are left before `end`. */
  rcInit(input: Uint8Array, at: number, end: number): boolean {
    if (end - at < RC_INIT_BYTES || input[at] !== 0) return false;
    this.range = -1;
    this.code = ((input[at + 1]! << 24) | (input[at + 2]! << 16) | (input[at + 3]! << 8) | input[at + 4]!);
    this.ip = at + RC_INIT_BYTES;
    return true;
  }

  /** Normalizes once more, as before every bit: after a stream's last symbol, `ip` is then the end of its data and `code` 0. */
  rcNormalize(input: Uint8Array): void {
    if ((this.range >>> 0) < RC_TOP) {
      this.range <<= 8;
      this.code = (this.code << 8) | (input[this.ip++] ?? 0);
    }
  }

  /** True when the range decoder ended exactly: code 0 (the encoder's flush leaves it so). */
  rcFinished(): boolean {
    return this.code === 0;
  }

  /**
   * Decodes symbols from `input` (up to `inEnd`) into `out` from `op`, the
   * dictionary beginning at `dictStart`, writing nothing at or past `limit`.
   * With `untilMarker` false it stops when the output reaches `limit`; with
   * it true only an end marker ends the run (output that would pass `limit`
   * is an Overrun). Returns the new output position; `end` says why.
   *
   * The range decoder's bit step is written out in place at every use,
   * its state in locals (int32, compared unsigned through `>>> 0`): a
   * method would load and store it on the object around every bit.
   */
  run(input: Uint8Array, inEnd: number, out: Uint8Array, op: number, dictStart: number, limit: number, untilMarker: boolean): number {
    const p = this.probs;
    const lc = this.lc;
    const lpMask = (1 << this.lp) - 1;
    const pbMask = (1 << this.pb) - 1;
    let range = this.range;
    let code = this.code;
    let ip = this.ip;
    let state = this.state;
    let rep0 = this.rep0;
    let rep1 = this.rep1;
    let rep2 = this.rep2;
    let rep3 = this.rep3;
    let prob: number;
    let bound: number;
    let end: RunEnd = RunEnd.Limit;
    for (;;) {
      if (op >= limit && !untilMarker) break;
      if (ip > inEnd) { end = RunEnd.Truncated; break; }
      const posState = (op - dictStart) & pbMask;
      let i = IS_MATCH + (state << POS_STATES_BITS) + posState;
      if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
      prob = p[i]!;
      bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
      if ((code >>> 0) < (bound >>> 0)) {
        range = bound;
        p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
        // A literal, coded with the previous byte's top lc bits and the position's low lp bits.
        if (op >= limit) { end = RunEnd.Overrun; break; }
        const prev = op > dictStart ? out[op - 1]! : 0;
        const base = LITERAL + LITERAL_CODER_SIZE * ((((op - dictStart) & lpMask) << lc) + (prev >> (8 - lc)));
        let sym = 1;
        if (state >= LIT_STATES) {
          // After a match: the byte at rep0 steers the model while the bits agree with it.
          let mb = out[op - rep0 - 1]!;
          let offs = 0x100;
          do {
            mb <<= 1;
            const mbit = mb & offs;
            i = base + offs + mbit + sym;
            if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
            prob = p[i]!;
            bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
            if ((code >>> 0) < (bound >>> 0)) {
              range = bound;
              p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
              sym <<= 1;
              offs ^= mbit;
            } else {
              range = (range - bound) | 0;
              code = (code - bound) | 0;
              p[i] = prob - (prob >> RC_MOVE_BITS);
              sym = (sym << 1) | 1;
              offs = mbit;
            }
          } while (sym < 0x100 && offs !== 0);
        }
        while (sym < 0x100) {
          i = base + sym;
          if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
          prob = p[i]!;
          bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
          if ((code >>> 0) < (bound >>> 0)) {
            range = bound;
            p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
            sym <<= 1;
          } else {
            range = (range - bound) | 0;
            code = (code - bound) | 0;
            p[i] = prob - (prob >> RC_MOVE_BITS);
            sym = (sym << 1) | 1;
          }
        }
        out[op++] = sym;
        state = state < 4 ? 0 : state < 10 ? state - 3 : state - 6;
        continue;
      }
      range = (range - bound) | 0;
      code = (code - bound) | 0;
      p[i] = prob - (prob >> RC_MOVE_BITS);

      // A match: a new distance (is_rep 0), or one of the last four.
      let lenCoder: number;
      let newDistance: boolean;
      i = IS_REP + state;
      if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
      prob = p[i]!;
      bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
      if ((code >>> 0) < (bound >>> 0)) {
        range = bound;
        p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
        newDistance = true;
        lenCoder = MATCH_LEN_CODER;
        state = state < LIT_STATES ? 7 : 10;
      } else {
        range = (range - bound) | 0;
        code = (code - bound) | 0;
        p[i] = prob - (prob >> RC_MOVE_BITS);
        newDistance = false;
        lenCoder = REP_LEN_CODER;
        i = IS_REP_G0 + state;
        if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
        prob = p[i]!;
        bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
        if ((code >>> 0) < (bound >>> 0)) {
          range = bound;
          p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
          i = IS_REP0_LONG + (state << POS_STATES_BITS) + posState;
          if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
          prob = p[i]!;
          bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
          if ((code >>> 0) < (bound >>> 0)) {
            range = bound;
            p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
            // Short rep: one byte from rep0.
            if ((rep0 >>> 0) >= op - dictStart) { end = RunEnd.Distance; this.distance = rep0; break; }
            if (op >= limit) { end = RunEnd.Overrun; break; }
            out[op] = out[op - rep0 - 1]!;
            op++;
            state = state < LIT_STATES ? 9 : 11;
            continue;
          }
          range = (range - bound) | 0;
          code = (code - bound) | 0;
          p[i] = prob - (prob >> RC_MOVE_BITS);
        } else {
          range = (range - bound) | 0;
          code = (code - bound) | 0;
          p[i] = prob - (prob >> RC_MOVE_BITS);
          let dist: number;
          i = IS_REP_G1 + state;
          if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
          prob = p[i]!;
          bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
          if ((code >>> 0) < (bound >>> 0)) {
            range = bound;
            p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
            dist = rep1;
          } else {
            range = (range - bound) | 0;
            code = (code - bound) | 0;
            p[i] = prob - (prob >> RC_MOVE_BITS);
            i = IS_REP_G2 + state;
            if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
            prob = p[i]!;
            bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
            if ((code >>> 0) < (bound >>> 0)) {
              range = bound;
              p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
              dist = rep2;
            } else {
              range = (range - bound) | 0;
              code = (code - bound) | 0;
              p[i] = prob - (prob >> RC_MOVE_BITS);
              dist = rep3;
              rep3 = rep2;
            }
            rep2 = rep1;
          }
          rep1 = rep0;
          rep0 = dist;
        }
        state = state < LIT_STATES ? 8 : 11;
      }

      // The length: choice bits pick the low, mid or high tree.
      let treeBase: number;
      let treeTop: number;
      let len: number;
      i = lenCoder + LEN_CHOICE;
      if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
      prob = p[i]!;
      bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
      if ((code >>> 0) < (bound >>> 0)) {
        range = bound;
        p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
        treeBase = lenCoder + LEN_LOW + (posState << LEN_LOW_BITS);
        treeTop = 1 << LEN_LOW_BITS;
        len = MATCH_LEN_MIN;
      } else {
        range = (range - bound) | 0;
        code = (code - bound) | 0;
        p[i] = prob - (prob >> RC_MOVE_BITS);
        i = lenCoder + LEN_CHOICE2;
        if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
        prob = p[i]!;
        bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
        if ((code >>> 0) < (bound >>> 0)) {
          range = bound;
          p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
          treeBase = lenCoder + LEN_MID + (posState << LEN_MID_BITS);
          treeTop = 1 << LEN_MID_BITS;
          len = MATCH_LEN_MIN + (1 << LEN_LOW_BITS);
        } else {
          range = (range - bound) | 0;
          code = (code - bound) | 0;
          p[i] = prob - (prob >> RC_MOVE_BITS);
          treeBase = lenCoder + LEN_HIGH;
          treeTop = 1 << LEN_HIGH_BITS;
          len = MATCH_LEN_MIN + (1 << LEN_LOW_BITS) + (1 << LEN_MID_BITS);
        }
      }
      let sym = 1;
      do {
        i = treeBase + sym;
        if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
        prob = p[i]!;
        bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
        if ((code >>> 0) < (bound >>> 0)) {
          range = bound;
          p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
          sym <<= 1;
        } else {
          range = (range - bound) | 0;
          code = (code - bound) | 0;
          p[i] = prob - (prob >> RC_MOVE_BITS);
          sym = (sym << 1) | 1;
        }
      } while (sym < treeTop);
      len += sym - treeTop;

      if (newDistance) {
        // The distance: a 6-bit slot, then reverse-coded low bits (modelled
        // below slot 14, direct bits and a 4-bit aligned tail above).
        rep3 = rep2;
        rep2 = rep1;
        rep1 = rep0;
        treeBase = DIST_SLOT + ((len < DIST_STATES + MATCH_LEN_MIN ? len - MATCH_LEN_MIN : DIST_STATES - 1) << DIST_SLOT_BITS);
        sym = 1;
        do {
          i = treeBase + sym;
          if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
          prob = p[i]!;
          bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
          if ((code >>> 0) < (bound >>> 0)) {
            range = bound;
            p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
            sym <<= 1;
          } else {
            range = (range - bound) | 0;
            code = (code - bound) | 0;
            p[i] = prob - (prob >> RC_MOVE_BITS);
            sym = (sym << 1) | 1;
          }
        } while (sym < (1 << DIST_SLOT_BITS));
        const slot = sym - (1 << DIST_SLOT_BITS);
        if (slot < DIST_MODEL_START) rep0 = slot;
        else {
          const footer = (slot >> 1) - 1;
          let dist = (2 | (slot & 1)) << footer;
          let bits: number;
          if (slot < DIST_MODEL_END) {
            treeBase = DIST_SPECIAL + dist - slot - 1;
            bits = footer;
          } else {
            // Direct bits: half the range each, no model.
            for (let k = footer - ALIGN_BITS, acc = 0; ; ) {
              if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
              range = range >>> 1;
              code = (code - range) | 0;
              const t = code >> 31;
              code = (code + (range & t)) | 0;
              acc = (acc << 1) + (t + 1);
              if (--k === 0) { dist = (dist + (acc << ALIGN_BITS)) | 0; break; }
            }
            treeBase = DIST_ALIGN;
            bits = ALIGN_BITS;
          }
          sym = 1;
          for (let k = 0; k < bits; k++) {
            i = treeBase + sym;
            if ((range >>> 0) < RC_TOP) { range <<= 8; code = (code << 8) | input[ip++]!; }
            prob = p[i]!;
            bound = Math.imul(range >>> RC_BIT_MODEL_TOTAL_BITS, prob);
            if ((code >>> 0) < (bound >>> 0)) {
              range = bound;
              p[i] = prob + ((RC_BIT_MODEL_TOTAL - prob) >> RC_MOVE_BITS);
              sym <<= 1;
            } else {
              range = (range - bound) | 0;
              code = (code - bound) | 0;
              p[i] = prob - (prob >> RC_MOVE_BITS);
              sym = (sym << 1) | 1;
              dist |= 1 << k;
            }
          }
          rep0 = dist;
          if (rep0 === END_MARKER_DIST) { end = RunEnd.Marker; break; }
        }
      }

      // The copy: distance rep0 means rep0 + 1 bytes back.
      if ((rep0 >>> 0) >= op - dictStart) { end = RunEnd.Distance; this.distance = rep0 >>> 0; break; }
      if (op + len > limit) { end = RunEnd.Overrun; break; }
      const from = op - rep0 - 1;
      if (len < 32) {
        // Short: byte by byte (overlapping when rep0 < len: the copy repeats the last rep0 + 1 bytes).
        for (let k = 0; k < len; k++) out[op + k] = out[from + k]!;
      } else if (rep0 === 0) {
        out.fill(out[from]!, op, op + len);
      } else {
        // Long: from `from`, as much as is already written each time, so
        // an overlapping copy doubles what repeats (a whole number of
        // periods of rep0 + 1 bytes) until it is done.
        for (let done = 0; done < len; ) {
          const n = Math.min(len - done, op + done - from);
          out.copyWithin(op + done, from, from + n);
          done += n;
        }
      }
      op += len;
    }
    this.range = range;
    this.code = code;
    this.ip = ip;
    this.state = state;
    this.rep0 = rep0;
    this.rep1 = rep1;
    this.rep2 = rep2;
    this.rep3 = rep3;
    this.end = end;
    return op;
  }
}

/** What a run that ended otherwise than it should have met, for a message (`room`: what the output limit is). */
const runEndMessage = (d: LzmaDecoder, room: string): string => {
  switch (d.end) {
    case RunEnd.Overrun: return `expands beyond ${room}`;
    case RunEnd.Distance: return `a match reaches ${d.distance + 1} bytes back, before the start of the dictionary`;
    case RunEnd.Truncated: return 'the compressed data ends early';
    case RunEnd.Marker: return 'an end marker where none may be';
    case RunEnd.Limit: return 'ends early';
  }
};

// LZMA2 (xz-file-format.txt 5.3.1; the chunk layout as xz_dec_lzma2.c reads it).
/** Control byte 0x00 ends the LZMA2 data. */
const LZMA2_END = 0x00;
/** 0x01: a stored chunk after a dictionary reset; 0x02: a stored chunk. */
const LZMA2_STORED_RESET = 0x01;
const LZMA2_STORED = 0x02;
/** 0x80 and up: an LZMA chunk; bits 5-6 say what it resets, bits 0-4 are bits 16-20 of its uncompressed size - 1. */
const LZMA2_LZMA = 0x80;
/** 0xa0: state reset; 0xc0: state reset and a properties byte; 0xe0: those and a dictionary reset. */
const LZMA2_RESET_STATE = 0xa0;
const LZMA2_RESET_PROPS = 0xc0;
const LZMA2_RESET_DICT = 0xe0;

export interface Lzma2Result {
  /** Input position after the end byte. */
  inPos: number;
  /** Output position after the last byte. */
  outPos: number;
}

/**
 * Decodes LZMA2 data at `input[at..end)` into `out` from `op`, writing
 * nothing at or past `limit` (`room` names that limit in messages).
 * LzmaError for malformed chunks, corrupt LZMA data or too much output.
 */
export function unlzma2(input: Uint8Array, at: number, end: number, out: Uint8Array, op: number, limit: number, room: string, dec: LzmaDecoder): Lzma2Result {
  let dictStart = op;
  let needDictReset = true;
  let needProps = true;
  for (;;) {
    if (at >= end) throw new LzmaError('LZMA2 data ends before its end byte');
    const control = input[at++]!;
    if (control === LZMA2_END) return { inPos: at, outPos: op };
    if (control >= LZMA2_RESET_DICT || control === LZMA2_STORED_RESET) {
      needDictReset = false;
      needProps = true;
      dictStart = op;
    } else if (needDictReset) {
      throw new LzmaError(`LZMA2 chunk (control byte 0x${control.toString(16)}) does not reset the dictionary, as the first must`);
    }
    if (control >= LZMA2_LZMA) {
      if (end - at < 4) throw new LzmaError('LZMA2 data ends inside a chunk header');
      const usize = ((control & 0x1f) << 16) + (input[at]! << 8) + input[at + 1]! + 1;
      const csize = (input[at + 2]! << 8) + input[at + 3]! + 1;
      at += 4;
      if (control >= LZMA2_RESET_PROPS) {
        if (at >= end) throw new LzmaError('LZMA2 data ends inside a chunk header');
        dec.setProps(input[at++]!);
        needProps = false;
        dec.reset();
      } else if (needProps) {
        throw new LzmaError(`LZMA2 chunk (control byte 0x${control.toString(16)}) after a dictionary reset carries no properties`);
      } else if (control >= LZMA2_RESET_STATE) {
        dec.reset();
      }
      if (op + usize > limit) throw new LzmaError(`LZMA2 chunk of ${usize} bytes expands beyond ${room}`);
      const cend = at + csize;
      if (cend > end) throw new LzmaError(`LZMA2 chunk of ${csize} compressed bytes overruns the data`);
      if (!dec.rcInit(input, at, cend)) throw new LzmaError('LZMA2 chunk does not start as range-coded data does (a 0 byte)');
      op = dec.run(input, cend, out, op, dictStart, op + usize, false);
      if (dec.end !== RunEnd.Limit) throw new LzmaError(`LZMA2 chunk: ${runEndMessage(dec, `its ${usize} bytes`)}`);
      dec.rcNormalize(input);
      if (dec.ip !== cend || !dec.rcFinished()) throw new LzmaError(`LZMA2 chunk's range-coded data does not end at its ${csize}th byte`);
      at = cend;
    } else {
      if (control > LZMA2_STORED) throw new LzmaError(`LZMA2 control byte 0x${control.toString(16)} is reserved`);
      if (end - at < 2) throw new LzmaError('LZMA2 data ends inside a chunk header');
      const size = (input[at]! << 8) + input[at + 1]! + 1;
      at += 2;
      if (op + size > limit) throw new LzmaError(`LZMA2 stored chunk of ${size} bytes expands beyond ${room}`);
      if (at + size > end) throw new LzmaError(`LZMA2 stored chunk of ${size} bytes overruns the data`);
      out.set(input.subarray(at, at + size), op);
      at += size;
      op += size;
    }
  }
}

/** The .lzma header: properties byte, dictionary size (le32), uncompressed size (le64; all ones: unknown). */
export const LZMA_ALONE_HEADER = 13;

const le32 = (b: Uint8Array, at: number): number => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;

/**
 * Decodes a legacy .lzma file that must expand to exactly `size` bytes.
 * An unknown size in the header means an end marker ends the data; a known
 * one must be `size`, and may still be followed by an end marker.
 */
export function unlzmaAlone(input: Uint8Array, size: number): Uint8Array {
  if (input.length < LZMA_ALONE_HEADER + RC_INIT_BYTES) throw new LzmaError(`.lzma data of ${input.length} bytes is shorter than its header`);
  const lo = le32(input, 5);
  const hi = le32(input, 9);
  const unknown = lo === 0xffffffff && hi === 0xffffffff;
  if (!unknown && (hi !== 0 || lo !== size)) throw new LzmaError(`.lzma header records ${hi * 2 ** 32 + lo} bytes, not ${size}`);
  const dec = new LzmaDecoder();
  dec.setProps(input[0]!);
  dec.reset();
  if (!dec.rcInit(input, LZMA_ALONE_HEADER, input.length)) throw new LzmaError('.lzma data does not start as range-coded data does (a 0 byte)');
  const out = new Uint8Array(size);
  let op = dec.run(input, input.length, out, 0, 0, size, unknown);
  if (dec.end === RunEnd.Limit) {
    // A known size reached: the data ends here, or an end marker follows (lzma -eos).
    const { range, code, ip } = dec;
    dec.rcNormalize(input);
    if (!dec.rcFinished()) {
      dec.range = range;
      dec.code = code;
      dec.ip = ip;
      op = dec.run(input, input.length, out, op, 0, size, true);
    }
  }
  if (dec.end === RunEnd.Marker) dec.rcNormalize(input);
  else if (dec.end !== RunEnd.Limit) throw new LzmaError(`.lzma data: ${runEndMessage(dec, `the ${size} bytes expected`)}`);
  if (dec.ip > input.length) throw new LzmaError('.lzma data: the compressed data ends early');
  if (!dec.rcFinished()) throw new LzmaError('.lzma data is corrupt: its range decoder does not end where its data does');
  if (dec.ip !== input.length) throw new LzmaError(`.lzma data: ${input.length - dec.ip} stray bytes after its end`);
  if (op !== size) throw new LzmaError(`.lzma data expands to ${op} bytes, ${size} expected`);
  return out;
}
