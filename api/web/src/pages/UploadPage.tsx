import { UploadSearch } from "../components/SimilarImages";

export function UploadPage() {
  return (
    <div>
      <h1>Search by image</h1>
      <p className="hint" style={{ marginTop: 0 }}>
        Find indexed images that look like a DICOM or PNG file of yours: it is embedded with the index's model and
        compared with every image by cosine similarity.
      </p>
      <section className="panel">
        <UploadSearch />
      </section>
    </div>
  );
}
