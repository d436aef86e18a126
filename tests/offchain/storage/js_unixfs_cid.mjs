// Independent CID oracle: the official JS UnixFS importer (ipfs-unixfs-importer), configured
// like kubo's `ipfs add` defaults. Usage: node js_unixfs_cid.mjs CHUNK_SIZE MAX_LINKS FILE...
// Prints one line per FILE: its root CID and the number of blocks the importer wrote.
import { readFile } from 'node:fs/promises'
import { importBytes } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const [chunkSize, maxLinks, ...files] = process.argv.slice(2)
for (const file of files) {
  const written = new Set()
  const blockstore = { put: async (cid) => { written.add(cid.toString()); return cid } }
  const entry = await importBytes(await readFile(file), blockstore, {
    cidVersion: 0,
    rawLeaves: false,
    leafType: 'file',
    reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize: Number(chunkSize) }),
    layout: balanced({ maxChildrenPerNode: Number(maxLinks) })
  })
  console.log(`${entry.cid.toString()} ${written.size}`)
}
